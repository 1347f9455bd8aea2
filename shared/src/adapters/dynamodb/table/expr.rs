//! Conditions and updates: rendered into DynamoDB expressions for the SDK,
//! evaluated directly for the in-memory table. The two live side by side
//! so that they cannot drift apart.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use rust_decimal::Decimal;

use super::{Changes, CmpOp, Cond, Item};

/// `ExpressionAttributeNames`: placeholder → attribute name.
pub type Names = HashMap<String, String>;
/// `ExpressionAttributeValues`: placeholder → value.
pub type Values = HashMap<String, AttributeValue>;

/// Placeholders of one request: every attribute name is `#nK`, every value
/// `:vK`, shared by its condition, update and filter.
#[derive(Debug, Default)]
pub struct Placeholders {
    pub names: Names,
    pub values: Values,
}

impl Placeholders {
    fn name(&mut self, attribute: &str) -> String {
        if let Some((placeholder, _)) = self.names.iter().find(|(_, name)| name.as_str() == attribute) {
            return placeholder.clone();
        }
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), attribute.to_owned());
        placeholder
    }

    fn value(&mut self, value: &AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value.clone());
        placeholder
    }

    pub fn condition(&mut self, cond: &Cond) -> String {
        match cond {
            Cond::Exists(attribute) => format!("attribute_exists({})", self.name(attribute)),
            Cond::NotExists(attribute) => format!("attribute_not_exists({})", self.name(attribute)),
            Cond::Cmp(attribute, op, value) => {
                let op = match op {
                    CmpOp::Eq => "=",
                    CmpOp::Ne => "<>",
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::Ge => ">=",
                };
                format!("{} {op} {}", self.name(attribute), self.value(value))
            }
            Cond::And(all) => self.join(all, " AND "),
            Cond::Or(any) => self.join(any, " OR "),
        }
    }

    /// `begins_with(a, :prefix)`, for a sort key condition.
    pub fn begins_with(&mut self, attribute: &str, prefix: &AttributeValue) -> String {
        format!("begins_with({}, {})", self.name(attribute), self.value(prefix))
    }

    /// `a BETWEEN :from AND :to`, for a sort key condition.
    pub fn between(&mut self, attribute: &str, from: &AttributeValue, to: &AttributeValue) -> String {
        format!("{} BETWEEN {} AND {}", self.name(attribute), self.value(from), self.value(to))
    }

    fn join(&mut self, parts: &[Cond], separator: &str) -> String {
        let rendered: Vec<String> = parts.iter().map(|c| format!("({})", self.condition(c))).collect();
        rendered.join(separator)
    }

    pub fn update(&mut self, changes: &Changes) -> String {
        let mut clauses = Vec::new();
        if !changes.set.is_empty() {
            let set: Vec<String> =
                changes.set.iter().map(|(a, v)| format!("{} = {}", self.name(a), self.value(v))).collect();
            clauses.push(format!("SET {}", set.join(", ")));
        }
        if !changes.add.is_empty() {
            let add: Vec<String> =
                changes.add.iter().map(|(a, v)| format!("{} {}", self.name(a), self.value(v))).collect();
            clauses.push(format!("ADD {}", add.join(", ")));
        }
        if !changes.remove.is_empty() {
            let remove: Vec<String> = changes.remove.iter().map(|a| self.name(a)).collect();
            clauses.push(format!("REMOVE {}", remove.join(", ")));
        }
        clauses.join(" ")
    }

    /// `None` when nothing was used (DynamoDB refuses empty maps).
    pub fn into_parts(self) -> (Option<Names>, Option<Values>) {
        let names = (!self.names.is_empty()).then_some(self.names);
        let values = (!self.values.is_empty()).then_some(self.values);
        (names, values)
    }
}

/// A DynamoDB number as a `Decimal`, whatever text it was written with.
pub fn number(text: &str) -> Option<Decimal> {
    Decimal::from_str(text).ok().or_else(|| Decimal::from_scientific(text).ok())
}

/// Compares two values as DynamoDB does; `None` when they do not compare
/// (different types, or a type without an order).
fn compare(left: &AttributeValue, right: &AttributeValue) -> Option<Ordering> {
    match (left, right) {
        (AttributeValue::N(a), AttributeValue::N(b)) => Some(number(a)?.cmp(&number(b)?)),
        (AttributeValue::S(a), AttributeValue::S(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (AttributeValue::Bool(a), AttributeValue::Bool(b)) if a == b => Some(Ordering::Equal),
        (AttributeValue::Bool(_), AttributeValue::Bool(_)) => None,
        _ => None,
    }
}

/// Whether `cond` holds for `item` (`None`: the item does not exist).
pub fn holds(cond: &Cond, item: Option<&Item>) -> bool {
    let attribute = |name: &str| item.and_then(|i| i.get(name));
    match cond {
        Cond::Exists(name) => attribute(name).is_some(),
        Cond::NotExists(name) => attribute(name).is_none(),
        Cond::Cmp(name, op, value) => {
            let Some(current) = attribute(name) else { return false };
            match (op, compare(current, value)) {
                // Values of different types are simply not equal.
                (CmpOp::Ne, None) => true,
                (_, None) => false,
                (CmpOp::Eq, Some(o)) => o == Ordering::Equal,
                (CmpOp::Ne, Some(o)) => o != Ordering::Equal,
                (CmpOp::Lt, Some(o)) => o == Ordering::Less,
                (CmpOp::Le, Some(o)) => o != Ordering::Greater,
                (CmpOp::Gt, Some(o)) => o == Ordering::Greater,
                (CmpOp::Ge, Some(o)) => o != Ordering::Less,
            }
        }
        Cond::And(all) => all.iter().all(|c| holds(c, item)),
        Cond::Or(any) => any.iter().any(|c| holds(c, item)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InvalidUpdate {
    #[error("ADD on attribute {0}, which is not a number")]
    AddToNonNumber(String),
    #[error("a number out of range in attribute {0}")]
    Number(String),
}

/// A number as DynamoDB stores it: normalized text.
pub fn normalized(value: &AttributeValue) -> AttributeValue {
    match value {
        AttributeValue::N(text) => match number(text) {
            Some(n) => AttributeValue::N(crate::domain::format_decimal(n)),
            None => value.clone(),
        },
        other => other.clone(),
    }
}

/// The item after `changes` (an update of a missing item starts from its key).
pub fn apply(changes: &Changes, mut item: Item) -> Result<Item, InvalidUpdate> {
    for (name, value) in &changes.set {
        item.insert(name.to_string(), normalized(value));
    }
    for (name, value) in &changes.add {
        let AttributeValue::N(delta) = value else {
            return Err(InvalidUpdate::AddToNonNumber(name.to_string()));
        };
        let current = match item.get(name.as_ref()) {
            None => Decimal::ZERO,
            Some(AttributeValue::N(text)) => number(text).ok_or_else(|| InvalidUpdate::Number(name.to_string()))?,
            Some(_) => return Err(InvalidUpdate::AddToNonNumber(name.to_string())),
        };
        let delta = number(delta).ok_or_else(|| InvalidUpdate::Number(name.to_string()))?;
        let sum = current.checked_add(delta).ok_or_else(|| InvalidUpdate::Number(name.to_string()))?;
        item.insert(name.to_string(), AttributeValue::N(crate::domain::format_decimal(sum)));
    }
    for name in &changes.remove {
        item.remove(name.as_ref());
    }
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> AttributeValue {
        AttributeValue::N(text.to_owned())
    }

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.to_owned())
    }

    #[test]
    fn conditions_render_with_shared_placeholders() {
        let mut p = Placeholders::default();
        let cond = Cond::eq("seq", n("3")).and(Cond::eq("count", n("2"))).and(Cond::lt("usd", n("6")));
        assert_eq!(p.condition(&cond), "(#n0 = :v0) AND (#n1 = :v1) AND (#n2 < :v2)");
        let update = Changes::new().add("usd", n("4")).add("count", n("1")).remove("lease");
        assert_eq!(p.update(&update), "ADD #n2 :v3, #n1 :v4 REMOVE #n3");
        let (names, values) = p.into_parts();
        assert_eq!(names.unwrap().len(), 4);
        assert_eq!(values.unwrap().len(), 5);
    }

    #[test]
    fn numbers_compare_as_numbers_and_missing_attributes_as_false() {
        let item = Item::from([("usd".to_owned(), n("9.50")), ("status".to_owned(), s("READY"))]);
        assert!(holds(&Cond::eq("usd", n("9.5")), Some(&item)));
        assert!(holds(&Cond::lt("usd", n("10")), Some(&item)));
        assert!(!holds(&Cond::lt("usd", n("9.5")), Some(&item)));
        assert!(!holds(&Cond::eq("missing", n("0")), Some(&item)));
        assert!(!holds(&Cond::eq("usd", s("9.5")), Some(&item)), "types differ");
        assert!(holds(&Cond::not_exists("PK"), None));
        assert!(!holds(&Cond::exists("PK"), None));
        assert!(holds(&Cond::eq("status", s("SETTLED")).or(Cond::eq("status", s("READY"))), Some(&item)));
    }

    #[test]
    fn updates_set_add_and_remove() {
        let item = Item::from([("usd".to_owned(), n("9.5")), ("lease".to_owned(), n("1"))]);
        let changes = Changes::new().add("usd", n("-0.50")).add("count", n("1")).set("s", s("x")).remove("lease");
        let after = apply(&changes, item).unwrap();
        assert_eq!(after["usd"], n("9"));
        assert_eq!(after["count"], n("1"));
        assert_eq!(after["s"], s("x"));
        assert!(!after.contains_key("lease"));
        assert!(apply(&Changes::new().add("s", n("1")), after).is_err());
    }
}
