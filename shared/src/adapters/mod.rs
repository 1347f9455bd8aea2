//! Implementations of the ports.

pub mod aws;
pub mod dynamodb;
pub mod http_exchange;
pub mod memory_queue;
pub mod sdk_metrics;
pub mod simulated_exchange;
pub mod sqs;
