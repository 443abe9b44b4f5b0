//! NPY parser on arbitrary bytes.
#![no_main]

use bilevel::io::read_npy_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_npy_bytes(data, std::path::Path::new("fuzz.npy"));
});
