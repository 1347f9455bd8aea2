//! The load tool's parts, shared by its binary (`hot-coin`, see
//! `main.rs`) and the regression guard (`tests/guard.rs`): a run of the
//! real store against the contention model of DynamoDB (or an emulator),
//! the traffic it places, the per-order wait it measures, what it costs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cost;
pub mod earliest;
pub mod run;
pub mod svg;
pub mod traffic;
