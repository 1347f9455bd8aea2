//! The API description, `openapi.yaml` at the repository's root, served as
//! JSON at `GET /openapi.json` (what API clients and fuzzers load).

use std::sync::LazyLock;

use bytes::Bytes;

const DOCUMENT: &str = include_str!("../../openapi.yaml");

static JSON: LazyLock<Bytes> = LazyLock::new(|| match serde_norway::from_str::<serde_json::Value>(DOCUMENT) {
    Ok(value) => Bytes::from(value.to_string()),
    // A test below keeps this from shipping; served rather than panicking.
    Err(error) => Bytes::from(serde_json::json!({ "error": error.to_string() }).to_string()),
});

/// The document as JSON.
pub fn json() -> Bytes {
    JSON.clone()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn the_document_is_valid_yaml_and_openapi_3_1() {
        let value: serde_json::Value = serde_norway::from_str(super::DOCUMENT).unwrap();
        assert_eq!(value["openapi"], "3.1.0");
        let served: serde_json::Value = serde_json::from_slice(&super::json()).unwrap();
        assert_eq!(served, value);
    }

    fn amount_pattern() -> regex_lite::Regex {
        let value: serde_json::Value = serde_norway::from_str(super::DOCUMENT).unwrap();
        let pattern = value["components"]["schemas"]["Amount"]["oneOf"][0]["pattern"].as_str().unwrap();
        regex_lite::Regex::new(pattern).unwrap()
    }

    /// The document's amount rule is the parser's, not an approximation:
    /// a fuzzer trusts it to tell valid requests from invalid ones.
    fn agrees_with_the_parser(pattern: &regex_lite::Regex, text: &str) {
        let parsed = shared::domain::Quantity::parse(text).is_ok();
        assert_eq!(pattern.is_match(text), parsed, "{text:?}: the parser says {parsed}");
    }

    #[test]
    fn the_amount_pattern_is_exactly_the_parsers_rule() {
        let pattern = amount_pattern();
        for text in [
            "3",
            "0.25",
            "1",
            "007",
            "0.00000001",
            "0.000000010",
            "1.000000000000",
            "999999999.99999999",
            "1000000000",
            "1000000000.000",
            "0001000000000",
            "0",
            "0.0",
            "000",
            "0.000000001",
            "1.123456789",
            "1000000000.00000001",
            "1000000001",
            "10000000000",
            "",
            ".5",
            "5.",
            "1.2.3",
            "-1",
            "+1",
            "1e3",
            " 1",
            "1 ",
            "１",
        ] {
            agrees_with_the_parser(&pattern, text);
        }
    }

    proptest::proptest! {
        #[test]
        fn the_amount_pattern_agrees_with_the_parser_on_any_digits(text in "[0-9]{0,12}(\\.[0-9]{0,12})?") {
            agrees_with_the_parser(&amount_pattern(), &text);
        }
    }
}
