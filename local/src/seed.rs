//! Accounts to create at start: `{"accounts": [{"user_id": "alice", "balance_usd": "100"}]}`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;
use shared::domain::{Usd, UserId};
use shared::ports::{Accounts, InfraError};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read the seed file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the seed file {path} is not {{\"accounts\": [{{\"user_id\": …, \"balance_usd\": \"…\"}}]}}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("seed account #{index}: {reason}")]
    Account { index: usize, reason: String },
    #[error("cannot store the seed accounts")]
    Store(#[from] InfraError),
}

#[derive(Deserialize)]
struct SeedFile {
    accounts: Vec<SeedAccount>,
}

#[derive(Deserialize)]
struct SeedAccount {
    user_id: String,
    /// A decimal string or number, read from its exact text.
    balance_usd: Box<RawValue>,
}

pub fn load(path: &Path) -> Result<Vec<(UserId, Usd)>, SeedError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeedError::Read { path: path.to_owned(), source })?;
    let file: SeedFile =
        serde_json::from_str(&text).map_err(|source| SeedError::Parse { path: path.to_owned(), source })?;
    let mut seen = std::collections::HashSet::new();
    file.accounts
        .iter()
        .enumerate()
        .map(|(index, account)| {
            let invalid = |reason: String| SeedError::Account { index, reason };
            let user =
                UserId::parse(&account.user_id).map_err(|e| invalid(format!("user_id {:?}: {e}", account.user_id)))?;
            // Locally a user is named by the X-User-Id header, which carries
            // visible ASCII and spaces only: any other id could never be used.
            if !account.user_id.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
                return Err(invalid(format!(
                    "user_id {:?} cannot be sent as X-User-Id (visible ASCII and spaces only)",
                    account.user_id
                )));
            }
            if !seen.insert(account.user_id.as_str()) {
                return Err(invalid(format!("user_id {:?} is listed twice", account.user_id)));
            }
            let raw = account.balance_usd.get();
            let text = raw.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(raw);
            let balance = Usd::parse(text)
                .ok_or_else(|| invalid(format!("balance_usd {raw} is not a non-negative plain decimal of at most 16 decimal places and 12 digits before the point")))?;
            if balance > Usd::BALANCE_CEILING {
                return Err(invalid(format!(
                    "balance_usd {raw} of {user} is over the balance ceiling of {} USD",
                    Usd::BALANCE_CEILING
                )));
            }
            Ok((user, balance))
        })
        .collect()
}

/// Opens the accounts that do not exist yet; an existing account is left
/// as it is (a restart on a used table creates no money). Returns how many
/// were opened.
pub async fn apply(store: &dyn Accounts, accounts: &[(UserId, Usd)]) -> Result<usize, SeedError> {
    let mut opened = 0;
    for (user, balance) in accounts {
        opened += usize::from(store.open_account(user, *balance).await?);
    }
    Ok(opened)
}
