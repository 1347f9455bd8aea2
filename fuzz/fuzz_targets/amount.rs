#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| fuzz_targets::amount(text));
