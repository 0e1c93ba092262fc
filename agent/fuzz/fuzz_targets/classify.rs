//! Any bytes through the classifier and its JSON form: it must neither panic nor produce
//! output `serde_json` cannot write.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let classified = gatemend_agent::detect::classify(line);
    if serde_json::to_vec(&classified).is_err() {
        panic!("unserialisable result for {line:?}");
    }
});
