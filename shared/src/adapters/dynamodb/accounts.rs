//! Funding accounts: an account is opened with a balance recorded as its
//! opening deposit; every later credit is a deposit with an operator's id.
//! A deposit record and its credit are written together, once per id, so
//! the audit can account for every dollar a balance ever held.

use async_trait::async_trait;

use super::item::{Item, account_key, deposit_key, get_decimal, get_s, n, opening_deposit, s};
use super::table::{Changes, Cond, Reason, Transacted, Write};
use super::{DynamoStore, unexpected};
use rust_decimal::Decimal;

use crate::domain::{DepositId, Usd, UserId};
use crate::ports::{Accounts, DepositError, Deposited, InfraError, Orders};

/// The token of the transaction that wrote a deposit record, on the record.
const DEPOSIT_TOKEN: &str = "token";

/// A deposit's record, marked with the token of the transaction writing it:
/// a cancellation that returns the record with this token is this very
/// deposit, committed by an earlier send whose reply was lost.
fn deposit_record(user: &UserId, id: &DepositId, usd: Usd, token: &str) -> Item {
    let mut record = deposit_key(user, id);
    record.insert("user_id".into(), s(user.as_str()));
    record.insert("deposit_id".into(), s(id.as_str()));
    record.insert("usd".into(), n(usd.value()));
    record.insert(DEPOSIT_TOKEN.into(), s(token));
    record
}

fn written_by(record: &Item, token: &str) -> bool {
    get_s(record, DEPOSIT_TOKEN).is_ok_and(|mark| mark == token)
}

#[async_trait]
impl Accounts for DynamoStore {
    async fn open_account(&self, user: &UserId, balance: Usd) -> Result<bool, InfraError> {
        if balance > Usd::BALANCE_CEILING {
            return Err(InfraError::new(
                "open account",
                format!("account {user}: {balance} USD is over the balance ceiling of {} USD", Usd::BALANCE_CEILING),
            ));
        }
        let mut account = account_key(user);
        account.insert("user_id".into(), s(user.as_str()));
        account.insert("balance_usd".into(), n(balance.value()));
        let token = ulid::Ulid::new().to_string();
        const ACCOUNT: usize = 0;
        const OPENING: usize = 1;
        let writes = [
            Write::Put { item: account, condition: Some(Cond::not_exists("PK")) },
            Write::Put {
                item: deposit_record(user, &opening_deposit(), balance, &token),
                condition: Some(Cond::not_exists("PK")),
            },
        ];
        match self.transact_idempotent("open account", &token, &writes).await? {
            Transacted::Committed => Ok(true),
            Transacted::Cancelled(reasons) => match (reasons.get(ACCOUNT), reasons.get(OPENING)) {
                (_, Some(Reason::ConditionFailed(Some(record)))) if written_by(record, &token) => Ok(true),
                (Some(Reason::ConditionFailed(_)), _) => Ok(false),
                _ => Err(InfraError::new("open account", unexpected(&reasons))),
            },
        }
    }

    async fn deposit(&self, user: &UserId, id: &DepositId, usd: Usd) -> Result<Deposited, DepositError> {
        let token = ulid::Ulid::new().to_string();
        // The most the account may hold before this deposit; `None`: the
        // deposit alone is over the ceiling.
        let room = Usd::BALANCE_CEILING.checked_sub(usd);
        const RECORD: usize = 0;
        const ACCOUNT: usize = 1;
        let writes = [
            Write::Put { item: deposit_record(user, id, usd, &token), condition: Some(Cond::not_exists("PK")) },
            Write::Update {
                key: account_key(user),
                changes: Changes::new().add("balance_usd", n(usd.value())).set("user_id", s(user.as_str())),
                // Against the balance as it is when the deposit lands, so
                // deposits racing each other cannot pass it together.
                condition: Some(match room {
                    Some(room) => Cond::not_exists("balance_usd").or(Cond::le("balance_usd", n(room.value()))),
                    // Fails for any item: checked again after the record's
                    // condition, so a replayed id still answers as a replay.
                    None => Cond::lt("balance_usd", n(Decimal::ZERO)).and(Cond::exists("balance_usd")),
                }),
            },
        ];
        match self.transact_idempotent("deposit", &token, &writes).await? {
            Transacted::Committed => Ok(Deposited::Credited { balance: self.balance(user).await? }),
            Transacted::Cancelled(reasons) => match reasons.get(RECORD) {
                Some(Reason::ConditionFailed(Some(record))) if written_by(record, &token) => {
                    Ok(Deposited::Credited { balance: self.balance(user).await? })
                }
                Some(Reason::ConditionFailed(Some(record))) => {
                    let credited = get_decimal(record, "usd")
                        .ok()
                        .and_then(Usd::new)
                        .ok_or_else(|| InfraError::new("read deposit", "a deposit record without its amount"))?;
                    if credited == usd {
                        Ok(Deposited::AlreadyCredited)
                    } else {
                        Err(DepositError::IdReused { id: id.clone(), credited, asked: usd })
                    }
                }
                _ => match reasons.get(ACCOUNT) {
                    Some(Reason::ConditionFailed(account)) => {
                        let balance = account
                            .as_ref()
                            .and_then(|item| get_decimal(item, "balance_usd").ok())
                            .and_then(Usd::new)
                            .unwrap_or_default();
                        Err(DepositError::OverCeiling { user: user.clone(), balance, usd })
                    }
                    _ => Err(InfraError::new("deposit", unexpected(&reasons)).into()),
                },
            },
        }
    }
}
