//! Implementations of the ports.

pub mod http_exchange;
pub mod memory;
pub mod memory_queue;
pub mod simulated_exchange;
