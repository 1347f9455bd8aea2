#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| fuzz_targets::place_order_body(body));
