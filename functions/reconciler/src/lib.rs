//! The reconciler function: on a schedule, sends the batches settlement
//! lost track of to the settle queue again (see `shared::reconcile`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Error, LambdaEvent};
use serde::Serialize;
use shared::reconcile::Reconciler;

#[derive(Debug, Serialize)]
pub struct Report {
    pub resent: Vec<String>,
    /// Batches whose re-send failed; tried again on the next run.
    pub failed: Vec<String>,
    /// Batches that exhausted their attempts: in the dead-letter queue,
    /// for an operator.
    pub left_to_operator: Vec<String>,
    /// Batches formed from what idle pool shards held.
    pub swept: Vec<String>,
}

/// Time left at the end of an invocation for the report and the runtime.
pub const MARGIN: Duration = Duration::from_secs(3);
/// An invocation sweeps for at most this long. The next one comes a minute
/// after it began: the two overlap by a few seconds, so the pool shards are
/// swept every `POOL_SWEEP_EVERY` around the clock (a sweep is exact however
/// many run at once), and a schedule that fires a little late leaves no gap.
pub const LONGEST: Duration = Duration::from_secs(65);

/// The scheduled event's content does not matter: every run looks at all
/// open batches, then sweeps the pool shards every few seconds while the
/// invocation lasts. An `Err` (the open batches could not be read) makes
/// the run count as failed; a failed send does not.
pub async fn handle(reconciler: &Reconciler, event: LambdaEvent<serde_json::Value>) -> Result<Report, Error> {
    let report = reconciler.run_until(tokio::time::Instant::now() + sweeping_for(event.context.deadline)).await?;
    tracing::info!(
        resent = report.resent.len(),
        failed = report.failed.len(),
        left_to_operator = report.left_to_operator.len(),
        swept = report.swept.len(),
        "reconciled"
    );
    let ids = |ids: &mut dyn Iterator<Item = String>| ids.collect::<Vec<_>>();
    Ok(Report {
        resent: ids(&mut report.resent.iter().map(ToString::to_string)),
        failed: ids(&mut report.failed.iter().map(|(id, _)| id.to_string())),
        left_to_operator: ids(&mut report.left_to_operator.iter().map(ToString::to_string)),
        swept: ids(&mut report.swept.iter().map(ToString::to_string)),
    })
}

/// How long this invocation may keep sweeping: until its deadline (ms since
/// the epoch, from the runtime) less a margin; no time at all without one.
fn sweeping_for(deadline_ms: u64) -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Duration::from_millis(deadline_ms).saturating_sub(now).saturating_sub(MARGIN).min(LONGEST)
}
