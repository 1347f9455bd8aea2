//! The purchase-order service without its Lambda entry points: the domain
//! (money, coins, orders, the batching rule), the ports it needs and their
//! adapters, and the two use cases the Lambdas run: placing an order and
//! settling a batch.

pub mod adapters;
pub mod audit;
pub mod config;
pub mod domain;
pub mod metrics;
pub mod ports;
pub mod reconcile;
pub mod service;
pub mod settlement;
pub mod telemetry;
