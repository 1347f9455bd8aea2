//! Test-only code, kept out of the production crates: the contract suites
//! every store and table backend runs, a table that injects faults, and
//! the models the simulation drives the real code against.

pub mod contention;
pub mod faults;
pub mod permissions;
pub mod recording;
pub mod sim;
pub mod store_contract;
pub mod table_contract;

/// Test logs on demand: with `TEST_LOG=1`, what the code under test logs
/// is printed with each test's output (filtered by `RUST_LOG`, default
/// `info`); without it, tests stay quiet. Safe to call from every test.
pub fn test_logs() {
    let wanted = std::env::var("TEST_LOG").is_ok_and(|v| !v.is_empty() && v != "0");
    if wanted {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Already installed by an earlier test of this binary: keep it.
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
}

/// A log writer for tests: what a subscriber writes, kept in memory.
#[derive(Clone, Default)]
pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut bytes) = self.0.lock() {
            bytes.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
