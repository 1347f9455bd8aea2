//! The emulators `./scripts/test` starts: DynamoDB Local (AWS's own) and
//! ministack (LocalStack-compatible). Their endpoints come from the
//! environment; every test makes its own table and queues on them.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

/// Where a test's table and queue live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emulator {
    DynamoDbLocal,
    Ministack,
}

impl Emulator {
    fn variable(self) -> &'static str {
        match self {
            Emulator::DynamoDbLocal => "DYNAMODB_LOCAL_ENDPOINT",
            Emulator::Ministack => "MINISTACK_ENDPOINT",
        }
    }

    /// The emulator's endpoint. Panics with instructions when it is not
    /// running: these tests are never skipped silently.
    pub fn endpoint(self) -> String {
        std::env::var(self.variable()).unwrap_or_else(|_| {
            panic!(
                "{} is not set: run ./scripts/test, which installs and starts the emulators, \
                 or point it at a running emulator (a LocalStack endpoint works for MINISTACK_ENDPOINT)",
                self.variable()
            )
        })
    }

    pub async fn sdk_config(self) -> SdkConfig {
        sdk_config(&self.endpoint()).await
    }
}

pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "emulator"))
        .load()
        .await
}

/// A name no other test uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}
