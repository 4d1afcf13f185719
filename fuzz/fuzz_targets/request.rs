//! Arbitrary bodies through the chat and completions handlers' parsing and
//! validation (first byte: which endpoint). Every input is answered Ok or a 400; none panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let _ = owl_server::parse_request(body, which & 1 == 0);
});
