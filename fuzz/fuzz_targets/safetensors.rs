//! Model and checkpoint files (safetensors) on arbitrary bytes.
#![no_main]

use bilevel::model_file::{checkpoint_from_bytes, model_from_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.safetensors");
    let _ = model_from_bytes(data, path);
    let _ = checkpoint_from_bytes(data, path);
});
