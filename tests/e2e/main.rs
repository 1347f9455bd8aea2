//! The end-to-end and emulator tests, one binary (one link, one run): each
//! module is what a separate test file was. Filter by module, e.g.
//! `cargo test -p e2e-tests --test e2e -- worked_examples::`.

mod bad_input;
mod concurrency;
mod deployed_stack;
mod iam;
mod settlement;
mod store_contract;
mod store_faults;
mod template;
mod worked_examples;
