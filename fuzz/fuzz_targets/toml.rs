//! TOML run files on arbitrary text, through to validated phases.
#![no_main]

use bilevel::config::RunConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("fuzz.toml");
        let _ = RunConfig::from_toml(text, path).and_then(|c| c.phases());
    }
});
