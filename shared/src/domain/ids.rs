use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ulid::Ulid;

thread_local! {
    /// A seeded source of ids for this thread, when a simulation asked for
    /// one: (random bits, the last timestamp used).
    static SEEDED_IDS: RefCell<Option<(StdRng, u64)>> = const { RefCell::new(None) };
}

/// Ids of this process, increasing: two made in the same millisecond still
/// sort in the order they were made (a user's orders list newest first).
static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);

fn next_ulid() -> Ulid {
    SEEDED_IDS.with(|seeded| match seeded.borrow_mut().as_mut() {
        // Ids still sort by creation, one millisecond apart.
        Some((rng, millis)) => {
            *millis += 1;
            Ulid::from_parts(*millis, rng.random())
        }
        None => {
            let mut generator = GENERATOR.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            generator.get_or_insert_with(ulid::Generator::new).generate().unwrap_or_else(|_| Ulid::new())
        }
    })
}

/// Makes the ids generated on this thread a function of `seed` until the
/// guard is dropped, so that a simulation replays exactly from its seed.
pub fn reproducible_ids(seed: u64) -> ReproducibleIds {
    SEEDED_IDS.with(|seeded| *seeded.borrow_mut() = Some((StdRng::seed_from_u64(seed), 1_700_000_000_000)));
    ReproducibleIds(())
}

#[must_use = "ids are reproducible only while the guard lives"]
pub struct ReproducibleIds(());

impl Drop for ReproducibleIds {
    fn drop(&mut self) {
        SEEDED_IDS.with(|seeded| *seeded.borrow_mut() = None);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is not valid: {reason}")]
pub struct InvalidId {
    pub what: &'static str,
    pub reason: &'static str,
}

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Ulid);

        impl $name {
            pub fn generate() -> $name {
                $name(next_ulid())
            }

            pub fn from_ulid(ulid: Ulid) -> $name {
                $name(ulid)
            }

            /// When it was made (its ULID's time, to the millisecond).
            pub fn created_at(&self) -> time::OffsetDateTime {
                let nanos = i128::from(self.0.timestamp_ms()) * 1_000_000;
                time::OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            }

            pub fn parse(text: &str) -> Result<$name, InvalidId> {
                // The decoder drops the bits above 128 that a first letter past
                // `7` would carry: such a text names some other id, so refuse it.
                Ulid::from_str(text)
                    .ok()
                    .filter(|ulid| ulid.to_string().eq_ignore_ascii_case(text))
                    .map($name)
                    .ok_or(InvalidId { what: $what, reason: "not a ULID" })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

ulid_id!(
    /// An order's id: a ULID, so ids sort by creation time.
    OrderId,
    "order id"
);
ulid_id!(
    /// A batch's id. Fresh for every batch and sent to the exchange as the
    /// `client_order_id`, so one batch is one exchange order forever.
    BatchId,
    "batch id"
);

/// The caller, as the JWT authorizer vouched for it (`sub`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn parse(text: &str) -> Result<UserId, InvalidId> {
        let invalid = |reason| InvalidId { what: "user id", reason };
        if text.is_empty() || text.len() > 256 {
            return Err(invalid("must be 1 to 256 bytes"));
        }
        if text.chars().any(char::is_control) {
            return Err(invalid("must not contain control characters"));
        }
        // HTTP drops them from a header's value: such an account, seeded or
        // funded, could never be reached.
        if text.starts_with(char::is_whitespace) || text.ends_with(char::is_whitespace) {
            return Err(invalid("must not begin or end with a space"));
        }
        Ok(UserId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! visible_ascii_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(text: &str) -> Result<$name, InvalidId> {
                let visible = text.bytes().all(|b| b.is_ascii_graphic());
                if text.is_empty() || text.len() > 128 || !visible {
                    return Err(InvalidId { what: $what, reason: "must be 1 to 128 visible ASCII characters" });
                }
                Ok($name(text.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

visible_ascii_id!(
    /// A client's `Idempotency-Key`: 1 to 128 visible ASCII characters,
    /// scoped to its user.
    IdempotencyKey,
    "Idempotency-Key"
);
visible_ascii_id!(
    /// An operator's id for a deposit: the same id credits once, however
    /// often the command is run.
    DepositId,
    "deposit id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_round_trip_through_text() {
        let id = OrderId::generate();
        assert_eq!(OrderId::parse(&id.to_string()), Ok(id));
        assert!(OrderId::parse("not-an-id").is_err());
        assert_eq!(OrderId::parse(&id.to_string().to_lowercase()), Ok(id), "Crockford is case-blind");
        let past_128_bits = format!("8{}", &id.to_string()[1..]);
        assert!(OrderId::parse(&past_128_bits).is_err(), "would alias another id");
    }

    #[test]
    fn idempotency_keys_are_visible_ascii_up_to_128() {
        assert!(IdempotencyKey::parse("k-1_ABC.~").is_ok());
        assert!(IdempotencyKey::parse(&"a".repeat(128)).is_ok());
        for bad in ["", "has space", "tab\t", "é", &"a".repeat(129)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reproducible_ids_repeat_per_seed_and_still_sort_by_creation() {
        let run = |seed| {
            let _guard = reproducible_ids(seed);
            (0..3).map(|_| OrderId::generate()).collect::<Vec<_>>()
        };
        let first = run(7);
        assert_eq!(first, run(7));
        assert_ne!(first, run(8));
        assert!(first.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(OrderId::generate(), OrderId::generate(), "random again once the guard is gone");
        let made: Vec<OrderId> = (0..1000).map(|_| OrderId::generate()).collect();
        assert!(made.windows(2).all(|w| w[0] < w[1]), "ids of one process increase");
    }

    #[test]
    fn user_ids_are_non_empty_and_printable() {
        assert!(UserId::parse("alice").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a\nb").is_err());
        assert!(UserId::parse(" lead").is_err() && UserId::parse("trail ").is_err());
        assert!(UserId::parse("first last").is_ok());
    }
}
