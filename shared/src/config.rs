//! Configuration, read once at start and failing fast with the variable's
//! name.

use std::time::Duration;

use rust_decimal::Decimal;

use crate::adapters::http_exchange::HttpExchangeConfig;
use crate::adapters::sqs::MAX_RECEIVE_COUNT;
use crate::domain::{PriceList, ResendPolicy, Usd};

/// Money that waited this long on a quiet shard is the sweep's: gathered
/// with other shards into a batch once they hold the minimum together.
/// Younger money, and money on a shard in use (written in the last 50 ms)
/// up to 200 ms, is left to its shard's next order, which closes the shard
/// at no extra cost (`domain::pooling::sweep`).
pub const POOL_DUE_AFTER: time::Duration = time::Duration::milliseconds(50);

/// How often the reconciler sweeps pool shards: money spread over shards is
/// batched about `POOL_DUE_AFTER` plus up to this long after the coin holds
/// the minimum. A coin that never grew past one shard costs a read of its
/// shard count a second; one that did, a read of its shards per sweep.
pub const POOL_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The sweep's rules as deployed.
pub fn sweep_rules() -> crate::domain::SweepRules {
    crate::domain::SweepRules { due_after: POOL_DUE_AFTER, ..crate::domain::SweepRules::default() }
}

/// When the reconciler function re-sends a batch: a `READY` batch after a
/// minute; a failed attempt's batch after five minutes (longer than the
/// settle queue's visibility timeout, after which SQS redelivers the
/// message by itself), doubling up to an hour; never after as many
/// attempts as the queue delivers a message (its dead letter and alarm).
pub const RESEND_POLICY: ResendPolicy = ResendPolicy {
    ready_after: time::Duration::minutes(1),
    backoff: time::Duration::minutes(5),
    backoff_cap: time::Duration::hours(1),
    max_attempts: MAX_RECEIVE_COUNT,
};

/// How often the reconciler checks each coin's oldest pending order against
/// the wait policy: the policy acts within about this long of its limit.
pub const WAIT_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The operator's wait policy: `POOL_MAX_WAIT` (`90s`, `15m`, `2h`; unset or
/// empty: orders wait for ever, as without a policy) and `POOL_WAIT_POLICY`
/// (`top-up`, which needs `HOUSE_USER_ID`, or `refund`).
pub fn wait_policy_from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<crate::ports::WaitPolicy>, ConfigError> {
    use crate::ports::{WaitAction, WaitPolicy};
    let set = |var: &str| lookup(var).filter(|v| !v.trim().is_empty());
    let Some(text) = set("POOL_MAX_WAIT") else {
        if let Some(policy) = set("POOL_WAIT_POLICY") {
            return Err(ConfigError {
                var: "POOL_WAIT_POLICY",
                reason: format!("\"{policy}\" is set, but POOL_MAX_WAIT is not: set both, or neither"),
            });
        }
        return Ok(None);
    };
    let max_wait = parse_wait(&text).ok_or_else(|| ConfigError {
        var: "POOL_MAX_WAIT",
        reason: format!("\"{text}\" is not a positive duration such as 90s, 15m or 2h (at most 366d)"),
    })?;
    let action = match set("POOL_WAIT_POLICY").as_deref() {
        Some("top-up") => {
            let house = set("HOUSE_USER_ID").ok_or_else(|| ConfigError {
                var: "HOUSE_USER_ID",
                reason: "POOL_WAIT_POLICY=top-up needs the house account's user id".to_owned(),
            })?;
            let house = crate::domain::UserId::parse(&house)
                .map_err(|e| ConfigError { var: "HOUSE_USER_ID", reason: format!("\"{house}\": {e}") })?;
            WaitAction::TopUp { house }
        }
        Some("refund") => WaitAction::Refund,
        Some(other) => {
            return Err(ConfigError {
                var: "POOL_WAIT_POLICY",
                reason: format!("\"{other}\" is not a wait policy: top-up or refund"),
            });
        }
        None => {
            return Err(ConfigError {
                var: "POOL_WAIT_POLICY",
                reason: format!("unset, but POOL_MAX_WAIT is \"{text}\": set it to top-up or refund"),
            });
        }
    };
    Ok(Some(WaitPolicy { max_wait, action }))
}

/// `90s`, `15m`, `2h`, `1d`: a whole number and a unit, positive.
pub fn parse_wait(text: &str) -> Option<time::Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().ok().filter(|n| *n > 0)?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    number.checked_mul(seconds).filter(|s| *s <= 366 * 86_400).map(time::Duration::seconds)
}

#[derive(thiserror::Error)]
#[error("configuration variable {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

/// The message itself: a Lambda's `main` returning this error prints it
/// with `Debug`, and an operator reads that line in the function's log.
impl std::fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The rules of the service: what is sold at what price, the exchange's
/// minimum buy, and the smallest order taken.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub prices: PriceList,
    pub minimum: Usd,
    /// The smallest cost an order may have. It bounds how many orders one
    /// batch can carry (and a refund must walk): a batch holds under twice
    /// the exchange minimum (`domain::pooling`), so at most
    /// `2 × minimum / min_order` orders, 2,000 with the defaults.
    pub min_order: Usd,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            prices: PriceList::default(),
            minimum: Usd::new(Decimal::TEN).unwrap_or_default(),
            min_order: Usd::new(Decimal::new(1, 2)).unwrap_or_default(),
        }
    }
}

impl ServiceConfig {
    /// `PRICES` (`"ABAN=4,BTC=95000"`, default `ABAN=4`),
    /// `EXCHANGE_MINIMUM_USD` (default `10`) and `MIN_ORDER_USD` (default
    /// `0.01`, positive and at most the exchange minimum).
    pub fn from_env() -> Result<ServiceConfig, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<ServiceConfig, ConfigError> {
        let defaults = ServiceConfig::default();
        let prices = match lookup("PRICES") {
            None => defaults.prices,
            Some(spec) => PriceList::parse(&spec)
                .map_err(|e| ConfigError { var: "PRICES", reason: format!("\"{spec}\": {e}") })?,
        };
        let minimum = match lookup("EXCHANGE_MINIMUM_USD") {
            None => defaults.minimum,
            Some(text) => positive_usd("EXCHANGE_MINIMUM_USD", &text)?,
        };
        let min_order_text = lookup("MIN_ORDER_USD");
        let min_order = match &min_order_text {
            None => defaults.min_order,
            Some(text) => positive_usd("MIN_ORDER_USD", text)?,
        };
        if min_order > minimum {
            let minimum_as_set = lookup("EXCHANGE_MINIMUM_USD")
                .map_or_else(|| format!("{minimum} by default"), |text| format!("EXCHANGE_MINIMUM_USD=\"{text}\""));
            return Err(match min_order_text {
                Some(text) => ConfigError {
                    var: "MIN_ORDER_USD",
                    reason: format!(
                        "\"{text}\" is over the exchange minimum ({minimum_as_set}): no order could be pooled"
                    ),
                },
                None => ConfigError {
                    var: "EXCHANGE_MINIMUM_USD",
                    reason: format!(
                        "{minimum_as_set} is under the smallest order (MIN_ORDER_USD, {min_order} by default): set MIN_ORDER_USD at most the minimum"
                    ),
                },
            });
        }
        Ok(ServiceConfig { prices, minimum, min_order })
    }
}

fn positive_usd(var: &'static str, text: &str) -> Result<Usd, ConfigError> {
    Usd::parse(text.trim()).filter(|usd| *usd > Usd::ZERO).ok_or_else(|| ConfigError {
        var,
        reason: format!(
            "\"{text}\" is not a positive decimal of at most {} places and {} digits before the point",
            Usd::MAX_SCALE,
            Usd::MAX_WHOLE_DIGITS
        ),
    })
}

/// How settlement talks to the exchange.
#[derive(Debug, Clone)]
pub struct SettleConfig {
    pub exchange: HttpExchangeConfig,
    /// How long a settle attempt holds a batch. Longer than the worst case
    /// of one attempt (buy and lookup, each bounded by the request timeout).
    pub lease: Duration,
}

impl SettleConfig {
    /// `EXCHANGE_URL` (required), `EXCHANGE_CONNECT_TIMEOUT_MS` (default
    /// 2000), `EXCHANGE_TIMEOUT_MS` (default 5000), `SETTLE_LEASE_SECONDS`
    /// (default 30).
    pub fn from_env() -> Result<SettleConfig, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<SettleConfig, ConfigError> {
        let base_url = lookup("EXCHANGE_URL")
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .ok_or_else(|| ConfigError {
                var: "EXCHANGE_URL",
                reason: match lookup("EXCHANGE_URL") {
                    Some(url) => format!("\"{url}\" is not an http:// or https:// URL"),
                    None => "unset; required, an http:// or https:// URL".to_owned(),
                },
            })?;
        let number = |var: &'static str, default: u64| -> Result<u64, ConfigError> {
            lookup(var).map_or(Ok(default), |text| {
                text.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ConfigError { var, reason: format!("\"{text}\" is not a positive integer") })
            })
        };
        Ok(SettleConfig {
            exchange: HttpExchangeConfig {
                base_url,
                connect_timeout: Duration::from_millis(number("EXCHANGE_CONNECT_TIMEOUT_MS", 2000)?),
                request_timeout: Duration::from_millis(number("EXCHANGE_TIMEOUT_MS", 5000)?),
            },
            lease: Duration::from_secs(number("SETTLE_LEASE_SECONDS", 30)?),
        })
    }
}

/// Where the Lambdas find the table and the settle queue.
#[derive(Debug, Clone)]
pub struct AwsResources {
    pub table: String,
    pub settle_queue_url: String,
}

impl AwsResources {
    /// `TABLE_NAME` and `SETTLE_QUEUE_URL`, both required.
    pub fn from_env() -> Result<AwsResources, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<AwsResources, ConfigError> {
        let required = |var: &'static str| {
            lookup(var)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| ConfigError { var, reason: "unset or empty; required".to_owned() })
        };
        Ok(AwsResources { table: required("TABLE_NAME")?, settle_queue_url: required("SETTLE_QUEUE_URL")? })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_wait_policy_is_both_variables_or_neither() {
        use crate::ports::{WaitAction, WaitPolicy};
        assert_eq!(wait_policy_from_lookup(env(&[])).unwrap(), None);
        assert_eq!(wait_policy_from_lookup(env(&[("POOL_MAX_WAIT", "")])).unwrap(), None);
        assert_eq!(
            wait_policy_from_lookup(env(&[("POOL_MAX_WAIT", "15m"), ("POOL_WAIT_POLICY", "refund")])).unwrap(),
            Some(WaitPolicy { max_wait: time::Duration::minutes(15), action: WaitAction::Refund })
        );
        let top_up = [("POOL_MAX_WAIT", "90s"), ("POOL_WAIT_POLICY", "top-up"), ("HOUSE_USER_ID", "house")];
        assert!(matches!(
            wait_policy_from_lookup(env(&top_up)).unwrap(),
            Some(WaitPolicy { action: WaitAction::TopUp { .. }, .. })
        ));
        for (pairs, var) in [
            (&[("POOL_WAIT_POLICY", "refund")][..], "POOL_WAIT_POLICY"),
            (&[("POOL_MAX_WAIT", "15"), ("POOL_WAIT_POLICY", "refund")][..], "POOL_MAX_WAIT"),
            (&[("POOL_MAX_WAIT", "0m"), ("POOL_WAIT_POLICY", "refund")][..], "POOL_MAX_WAIT"),
            (&[("POOL_MAX_WAIT", "-5m"), ("POOL_WAIT_POLICY", "refund")][..], "POOL_MAX_WAIT"),
            (&[("POOL_MAX_WAIT", "15m")][..], "POOL_WAIT_POLICY"),
            (&[("POOL_MAX_WAIT", "15m"), ("POOL_WAIT_POLICY", "burn")][..], "POOL_WAIT_POLICY"),
            (&[("POOL_MAX_WAIT", "15m"), ("POOL_WAIT_POLICY", "top-up")][..], "HOUSE_USER_ID"),
        ] {
            assert_eq!(wait_policy_from_lookup(env(pairs)).unwrap_err().var, var, "{pairs:?}");
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |var| map.get(var).cloned()
    }

    #[test]
    fn defaults_are_the_challenges_numbers() {
        let config = ServiceConfig::from_lookup(env(&[])).unwrap();
        assert_eq!(config.minimum.to_string(), "10");
        assert_eq!(config.prices.quote("ABAN").unwrap().1.to_string(), "4");
    }

    #[test]
    fn bad_values_name_their_variable() {
        let err = ServiceConfig::from_lookup(env(&[("EXCHANGE_MINIMUM_USD", "ten")])).unwrap_err();
        assert_eq!(err.var, "EXCHANGE_MINIMUM_USD");
        let err = ServiceConfig::from_lookup(env(&[("PRICES", "ABAN=x")])).unwrap_err();
        assert_eq!(err.var, "PRICES");
        let err = SettleConfig::from_lookup(env(&[])).unwrap_err();
        assert_eq!(err.var, "EXCHANGE_URL");
        let err =
            SettleConfig::from_lookup(env(&[("EXCHANGE_URL", "http://x"), ("EXCHANGE_TIMEOUT_MS", "0")])).unwrap_err();
        assert_eq!(err.var, "EXCHANGE_TIMEOUT_MS");
    }
}
