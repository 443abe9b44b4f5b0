//! LIBSVM reader on arbitrary bytes, free and with a model's fixed shape.
#![no_main]

use bilevel::io::{LibsvmOptions, read_libsvm_from};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.libsvm");
    let _ = read_libsvm_from(data, path, &LibsvmOptions::default());
    let _ = read_libsvm_from(data, path, &LibsvmOptions { features: Some(13), outputs: Some(3) });
});
