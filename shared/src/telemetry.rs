//! Logs of the Lambda functions: JSON lines (CloudWatch adds the time),
//! level from `RUST_LOG` (default `info`).

pub fn init_lambda() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .without_time()
        .init();
}
