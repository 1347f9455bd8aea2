//! Logs of the Lambda functions: JSON lines (CloudWatch adds the time).
//! The level comes from `AWS_LAMBDA_LOG_LEVEL` (the function's logging
//! configuration, as the runtime's default subscriber reads it), else from
//! `RUST_LOG`, else `info`.

use std::error::Error;
use std::fmt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// What the functions' logging reads: the level Lambda sets from the
/// function's logging configuration, then `RUST_LOG`.
pub const LOG_VARIABLES: [&str; 2] = ["AWS_LAMBDA_LOG_LEVEL", "RUST_LOG"];

pub fn init_lambda() {
    tracing::subscriber::set_global_default(lambda_subscriber(std::io::stdout)).ok();
}

/// The functions' subscriber, writing to `writer` (tests capture it).
pub fn lambda_subscriber<W>(writer: W) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(lambda_filter(
            std::env::var(LOG_VARIABLES[0]).ok().as_deref(),
            std::env::var(LOG_VARIABLES[1]).ok().as_deref(),
        ))
        .without_time()
        .with_writer(writer)
        .finish()
}

/// Lambda's levels are `TRACE` … `FATAL`; tracing has no `FATAL`.
fn lambda_filter(lambda_level: Option<&str>, rust_log: Option<&str>) -> EnvFilter {
    let from_lambda = lambda_level.map(|level| match level.to_ascii_lowercase().as_str() {
        "fatal" => "error".to_owned(),
        other => other.to_owned(),
    });
    from_lambda
        .as_deref()
        .or(rust_log)
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

/// An error and every cause under it, `top: cause: cause`, for a log
/// field: the JSON formatter records only an error's own message, and the
/// reason a DynamoDB call or an exchange request failed is in its sources.
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ports::InfraError;

    #[test]
    fn an_error_chain_shows_every_cause() {
        let cause = std::io::Error::other("ResourceNotFoundException: Requested resource not found");
        let error = InfraError::new("get item", cause);
        assert_eq!(
            ErrorChain(&error).to_string(),
            "get item failed: ResourceNotFoundException: Requested resource not found"
        );
    }

    #[test]
    fn the_functions_log_level_wins_over_rust_log() {
        let shown = |filter: EnvFilter| filter.max_level_hint().map(|l| l.to_string());
        assert_eq!(shown(lambda_filter(Some("DEBUG"), Some("error"))), Some("debug".to_owned()));
        assert_eq!(shown(lambda_filter(Some("FATAL"), None)), Some("error".to_owned()));
        assert_eq!(shown(lambda_filter(None, Some("warn"))), Some("warn".to_owned()));
        assert_eq!(shown(lambda_filter(None, None)), Some("info".to_owned()));
    }
}
