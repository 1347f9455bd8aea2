//! Test-only code, kept out of the production crates: the contract suites
//! every store and table backend runs, a table that injects faults, and
//! the models the simulation drives the real code against.

pub mod contention;
pub mod faults;
pub mod recording;
pub mod sim;
pub mod store_contract;
pub mod table_contract;
