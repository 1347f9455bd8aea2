//! The committed corpus, replayed on the stable toolchain: every input the
//! fuzzers kept (and every crash they found, once fixed) stays checked.

use std::path::Path;

fn each_input(target: &str, check: impl Fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let input = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check(&input);
        count += 1;
    }
    assert!(count > 0, "{} is empty", dir.display());
}

#[test]
fn the_place_order_body_corpus_passes() {
    each_input("place_order_body", fuzz_targets::place_order_body);
}

#[test]
fn the_amount_corpus_passes() {
    each_input("amount", |input| {
        if let Ok(text) = std::str::from_utf8(input) {
            fuzz_targets::amount(text);
        }
    });
}
