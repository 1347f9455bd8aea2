//! Funding accounts: an account is opened with a balance recorded as its
//! opening deposit; every later credit is a deposit with an operator's id.
//! A deposit record and its credit are written together, once per id, so
//! the audit can account for every dollar a balance ever held.

use async_trait::async_trait;

use super::item::{Item, account_key, deposit_key, get_decimal, n, opening_deposit, s};
use super::table::{Changes, Cond, Reason, Transacted, Write};
use super::{DynamoStore, unexpected};
use crate::domain::{DepositId, Usd, UserId};
use crate::ports::{Accounts, DepositError, Deposited, InfraError, Orders};

fn deposit_record(user: &UserId, id: &DepositId, usd: Usd) -> Item {
    let mut record = deposit_key(user, id);
    record.insert("user_id".into(), s(user.as_str()));
    record.insert("deposit_id".into(), s(id.as_str()));
    record.insert("usd".into(), n(usd.value()));
    record
}

#[async_trait]
impl Accounts for DynamoStore {
    async fn open_account(&self, user: &UserId, balance: Usd) -> Result<bool, InfraError> {
        let mut account = account_key(user);
        account.insert("user_id".into(), s(user.as_str()));
        account.insert("balance_usd".into(), n(balance.value()));
        let writes = [
            Write::Put { item: account, condition: Some(Cond::NotExists("PK")) },
            Write::Put {
                item: deposit_record(user, &opening_deposit(), balance),
                condition: Some(Cond::NotExists("PK")),
            },
        ];
        match self.transact_idempotent("open account", &writes).await? {
            Transacted::Committed => Ok(true),
            Transacted::Cancelled(reasons) if matches!(reasons.first(), Some(Reason::ConditionFailed(_))) => Ok(false),
            Transacted::Cancelled(reasons) => Err(InfraError::new("open account", unexpected(&reasons))),
        }
    }

    async fn deposit(&self, user: &UserId, id: &DepositId, usd: Usd) -> Result<Deposited, DepositError> {
        let writes = [
            Write::Put { item: deposit_record(user, id, usd), condition: Some(Cond::NotExists("PK")) },
            Write::Update {
                key: account_key(user),
                changes: Changes::new().add("balance_usd", n(usd.value())).set("user_id", s(user.as_str())),
                condition: None,
            },
        ];
        match self.transact_idempotent("deposit", &writes).await? {
            Transacted::Committed => Ok(Deposited::Credited { balance: self.balance(user).await? }),
            Transacted::Cancelled(reasons) => match reasons.first() {
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
                _ => Err(InfraError::new("deposit", unexpected(&reasons)).into()),
            },
        }
    }
}
