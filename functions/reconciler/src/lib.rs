//! The reconciler function: on a schedule, sends `READY` batches older than
//! a minute and batches whose settle lease expired to the settle queue again.

use lambda_runtime::{Error, LambdaEvent};
use serde::Serialize;
use shared::reconcile::Reconciler;

#[derive(Debug, Serialize)]
pub struct Report {
    pub resent: Vec<String>,
}

/// The scheduled event's content does not matter: every run looks at all
/// open batches. An `Err` makes the run count as failed (and alarms).
pub async fn handle(reconciler: &Reconciler, _event: LambdaEvent<serde_json::Value>) -> Result<Report, Error> {
    let resent = reconciler.run_once().await?;
    tracing::info!(resent = resent.len(), "reconciled");
    Ok(Report { resent: resent.iter().map(ToString::to_string).collect() })
}
