//! What the fuzz targets check, shared by the targets (`cargo +nightly fuzz
//! run <target>`) and by a test that replays the committed corpus on the
//! stable toolchain (`cargo test -p fuzz-targets`).

use place_order::wire::PlaceOrderRequest;
use rust_decimal::Decimal;
use shared::domain::{Quantity, Usd};

/// The body of `POST /orders`, as any bytes a client can send: the parser
/// never panics, and what it accepts is an order whose amount says exactly
/// what the client wrote.
pub fn place_order_body(body: &[u8]) {
    let Ok(order) = PlaceOrderRequest::parse(body) else { return };
    let text = order.amount.to_string();
    assert_eq!(Quantity::parse(&text), Ok(order.amount), "{text}");
    // The same order, written canonically, parses to the same order.
    let canonical = serde_json::json!({ "coin": order.coin, "amount": text }).to_string();
    let again = PlaceOrderRequest::parse(canonical.as_bytes()).map(|o| (o.coin, o.amount));
    assert_eq!(again.ok(), Some((order.coin.clone(), order.amount)), "{canonical}");
    amount(&text);
}

/// Amounts and dollar figures as text: the parsers never panic, never
/// round, and what they accept is within the API's rules; the cost of an
/// accepted amount at a price is exactly price × amount.
pub fn amount(text: &str) {
    if let Ok(amount) = Quantity::parse(text) {
        let value = amount.value();
        assert!(value > Decimal::ZERO && value <= Quantity::MAX.value(), "{text}");
        assert!(value.scale() <= Quantity::MAX_SCALE, "{text}");
        assert_eq!(Quantity::parse(&amount.to_string()), Ok(amount), "{text}");
        // Nothing was rounded: where rust_decimal reads the text exactly,
        // it reads the same number.
        if let Ok(exact) = Decimal::from_str_exact(text) {
            assert_eq!(exact.normalize(), value, "{text}");
        }
        // Prices whose product with any valid amount fits a Decimal exactly.
        for price in ["4", "0.01", "123456.789"] {
            let Some(price) = Usd::parse(price) else { continue };
            let cost = Usd::cost(price, amount).map(Usd::value);
            assert_eq!(cost, price.value().checked_mul(value).map(|c| c.normalize()), "{text} × {price}");
            assert!(cost.is_some(), "{text} × {price}");
        }
    }
    if let Some(usd) = Usd::parse(text) {
        assert_eq!(Usd::parse(&usd.to_string()), Some(usd), "{text}");
    }
}
