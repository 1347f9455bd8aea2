//! How the functions and tools reach AWS: the SDK's standard configuration
//! (`AWS_ENDPOINT_URL*`, region, credentials), with timeouts. Without them
//! a request that hangs holds an invocation until the Lambda times out, and
//! a settle attempt past its lease; with them it fails in seconds, and is
//! retried (a write whose outcome that leaves unknown is resent with its
//! token, or read back).

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(10))
        .build()
}

/// The standard configuration, with [`timeouts`].
pub async fn load_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts()).load().await
}
