//! Every record the audit checks, read back with a scan.

use async_trait::async_trait;

use super::item::{
    self, CLOSED_PREFIX, balance_of, batch_of, closed_record_of, get_s, order_of, parse_shard_partition,
};
use super::{DynamoStore, infra};
use crate::audit::{ClosedPool, DepositRecord, Ledger, OpenPool};
use crate::domain::{DepositId, Usd, UserId};
use crate::ports::{InfraError, LedgerRecords};

#[async_trait]
impl LedgerRecords for DynamoStore {
    async fn ledger(&self) -> Result<Ledger, InfraError> {
        let mut ledger = Ledger::default();
        let mut start = None;
        loop {
            let page = self.table.scan(start).await?;
            for found in &page.items {
                let (pk, sk) = (get_s(found, item::PK), get_s(found, item::SK));
                let (Ok(pk), Ok(sk)) = (pk, sk) else { continue };
                let read = infra("read ledger");
                match (pk.split_once('#'), sk) {
                    (Some(("ACCOUNT", user)), "ACCOUNT") => {
                        let user = UserId::parse(user).map_err(read)?;
                        ledger.accounts.push((user, balance_of(Some(found)).map_err(infra("read account"))?));
                    }
                    (Some(("ACCOUNT", _)), sk) if sk.starts_with("ORDER#") => {
                        ledger.orders.push(order_of(found).map_err(infra("read order"))?);
                    }
                    (Some(("ACCOUNT", user)), sk) if sk.starts_with("DEPOSIT#") => {
                        let usd = item::get_decimal(found, "usd").ok().and_then(Usd::new);
                        let usd = usd.ok_or_else(|| InfraError::new("read deposit", format!("{sk} has no amount")))?;
                        ledger.deposits.push(DepositRecord {
                            user: UserId::parse(user).map_err(infra("read deposit"))?,
                            id: DepositId::parse(&sk["DEPOSIT#".len()..]).map_err(infra("read deposit"))?,
                            usd,
                        });
                    }
                    (Some(("COIN", _)), "POOL") => {
                        let (coin, shard) =
                            parse_shard_partition(pk).ok_or_else(|| InfraError::new("read pool", pk.to_owned()))?;
                        let state = item::shard_pool_of(shard, Some(found)).map_err(infra("read pool"))?;
                        ledger.pools.push(OpenPool { coin, shard, state });
                    }
                    (Some(("COIN", _)), sk) if sk.starts_with(CLOSED_PREFIX) => {
                        let record = closed_record_of(found).map_err(infra("read a closed pool"))?;
                        ledger.closed_pools.push(ClosedPool {
                            coin: record.coin,
                            pool: record.pool,
                            batch: record.batch,
                            members: record.members,
                        });
                    }
                    (Some(("BATCH", _)), "BATCH") => ledger.batches.push(batch_of(found).map_err(infra("read batch"))?),
                    // Idempotency records and shard counts are not money.
                    _ => {}
                }
            }
            start = page.next;
            if start.is_none() {
                return Ok(ledger);
            }
        }
    }
}
