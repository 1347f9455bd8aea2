//! The purchase-order service without its Lambda entry points: the domain
//! (money, coins, orders, pooling's rules), the ports it needs and their
//! adapters, and the use cases, one chapter each: placing an order
//! (`service`), pooling (`pooling`: the sweep and the bounded wait),
//! settling a batch (`settlement`), re-sending what settlement lost track of
//! (`reconcile`), and the money invariants (`audit`).

pub mod adapters;
pub mod audit;
pub mod config;
pub mod domain;
pub mod metrics;
pub mod pooling;
pub mod ports;
pub mod reconcile;
pub mod service;
pub mod settlement;
pub mod telemetry;
