//! `orders-local`'s exporter of the service's metrics: Prometheus text at
//! `GET /metrics`, and printed when it stops. The Lambda functions count
//! the same things (`shared::metrics`) and export them as CloudWatch
//! Embedded Metric Format lines.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder for the process, once; later calls
/// return the same handle. `None` (logged) if another recorder is installed.
/// Needs a tokio runtime: histograms are compacted in the background.
pub fn install() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => {
                shared::metrics::describe();
                shared::metrics::register_at_zero();
                let upkeep = handle.clone();
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        every.tick().await;
                        upkeep.run_upkeep();
                    }
                });
                Some(handle)
            }
            Err(error) => {
                tracing::warn!(%error, "metrics are not served: could not install the Prometheus recorder");
                None
            }
        })
        .as_ref()
}

/// The metrics so far, in Prometheus' text format; `None` if not installed.
pub fn render() -> Option<String> {
    PROMETHEUS.get()?.as_ref().map(PrometheusHandle::render)
}
