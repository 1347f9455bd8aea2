//! The reconciler function: on a schedule, sends the batches settlement
//! lost track of to the settle queue again (see `shared::reconcile`).

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

/// The scheduled event's content does not matter: every run looks at all
/// open batches. An `Err` (the open batches could not be read) makes the
/// run count as failed; a failed send does not.
pub async fn handle(reconciler: &Reconciler, _event: LambdaEvent<serde_json::Value>) -> Result<Report, Error> {
    let report = reconciler.run_once().await?;
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
