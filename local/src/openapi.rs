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
}
