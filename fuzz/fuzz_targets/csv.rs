//! CSV reader on arbitrary bytes, with and without one-vs-rest labels.
#![no_main]

use bilevel::io::{CsvOptions, read_csv_from};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.csv");
    let _ = read_csv_from(data, path, &CsvOptions::default());
    let _ = read_csv_from(data, path, &CsvOptions { one_vs_rest: true, ..CsvOptions::default() });
});
