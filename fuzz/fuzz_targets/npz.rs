//! scipy .npz reader on arbitrary bytes.
#![no_main]

use bilevel::io::read_npz_from;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_npz_from(std::io::Cursor::new(data), std::path::Path::new("fuzz.npz"));
});
