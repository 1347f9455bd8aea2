//! Faults injected at the adapter, for tests: what DynamoDB does under
//! contention (transactions cancelled with `TransactionConflict`) and on a
//! flaky network (a committed transaction whose reply is lost).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Failpoints {
    /// Cancel this many of every `conflict_period` transactions with
    /// `TransactionConflict` before sending them.
    pub conflicts_per_period: u64,
    pub conflict_period: u64,
    /// Lose the reply of every `lost_reply_period`-th committed transaction,
    /// as a timeout would (0: never).
    pub lost_reply_period: u64,
    attempts: AtomicU64,
    commits: AtomicU64,
}

impl Failpoints {
    /// A storm: `conflicts` of every `period` transactions conflict, and the
    /// reply of every `lost_reply_period`-th commit is lost.
    pub fn storm(conflicts: u64, period: u64, lost_reply_period: u64) -> Failpoints {
        Failpoints {
            conflicts_per_period: conflicts,
            conflict_period: period,
            lost_reply_period,
            ..Failpoints::default()
        }
    }

    pub(crate) fn conflict_now(&self) -> bool {
        if self.conflict_period == 0 {
            return false;
        }
        let n = self.attempts.fetch_add(1, Ordering::Relaxed);
        n % self.conflict_period < self.conflicts_per_period
    }

    pub(crate) fn lose_reply_now(&self) -> bool {
        if self.lost_reply_period == 0 {
            return false;
        }
        let n = self.commits.fetch_add(1, Ordering::Relaxed) + 1;
        n.is_multiple_of(self.lost_reply_period)
    }
}
