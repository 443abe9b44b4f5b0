//! Hostile input: random and mutated bytes through every reader give a value or an error with
//! a message — never a panic — and numbers read from a file never size an allocation beyond
//! what the file's own size justifies.

mod common;

use std::path::Path;

use bilevel::config::RunConfig;
use bilevel::io::{
    CsvOptions, LibsvmOptions, read_csv_from, read_libsvm_from, read_npy_bytes, read_npz_from,
};
use bilevel::model_file::{checkpoint_from_bytes, model_from_bytes};
use bilevel::sparse::Layout;
use proptest::prelude::*;

const CSV: &str = "a,b,label\n1,2,0\n3.5,-4e2,1\n5,6,1\n";
const LIBSVM: &str = "# comment\n1 1:0.5 3:-1\n0 2:0.25\n0,2 1:1 4:2e-3\n";
/// scipy's `save_npz(…, compressed=False)` of a 3×4 CSR matrix (tests/data/README.md).
const NPZ: &[u8] = include_bytes!("data/tiny_stored.npz");
const TOML: &str = "[[phase]]\nname = \"local\"\noptimizer = \"sgd\"\nparams = \"features:0..3\"\nsteps = 10\n\n[[phase]]\noptimizer = \"adamw\"\nsteps = 5\nbetas = [0.9, 0.99]\n";

fn origin() -> &'static Path {
    Path::new("input")
}

/// A small valid NPY file (f32, 2×3).
fn npy() -> Vec<u8> {
    common::npy_bytes(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "<f4")
}

/// A small valid model file.
fn model() -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("bilevel-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    let params =
        bilevel::Params::from_parts(3, 2, &[0.5, -1.0, 2.0, 0.0, 1.5, -0.25], &[0.1, -0.2])
            .unwrap();
    bilevel::model_file::save_model(&path, &params, None, &serde_json::json!({}), false).unwrap();
    std::fs::read(&path).unwrap()
}

/// Every reader on `bytes`; each must return rather than panic, with a message on error.
fn read_everything(bytes: &[u8]) {
    let messages = [
        read_csv_from(bytes, origin(), &CsvOptions::default()).err(),
        read_csv_from(
            bytes,
            origin(),
            &CsvOptions {
                one_vs_rest: true,
                ..CsvOptions::default()
            },
        )
        .err(),
        read_libsvm_from(bytes, origin(), &LibsvmOptions::default()).err(),
        read_libsvm_from(
            bytes,
            origin(),
            &LibsvmOptions {
                features: Some(4),
                outputs: Some(3),
            },
        )
        .err(),
        read_npy_bytes(bytes, origin()).err(),
        read_npz_from(std::io::Cursor::new(bytes), origin()).err(),
        model_from_bytes(bytes, origin()).err(),
        checkpoint_from_bytes(bytes, origin()).err(),
        std::str::from_utf8(bytes).ok().and_then(|t| {
            RunConfig::from_toml(t, origin())
                .and_then(|c| c.phases())
                .err()
        }),
    ];
    for message in messages.into_iter().flatten().map(|e| e.to_string()) {
        assert!(!message.trim().is_empty());
    }
}

/// `base` with up to 8 byte edits: overwrite, insert or delete.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len().max(1);
    proptest::collection::vec((0..3u8, 0..len, any::<u8>()), 1..8).prop_map(move |edits| {
        let mut bytes = base.clone();
        for (kind, at, byte) in edits {
            let at = at.min(bytes.len());
            match kind {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        read_everything(&bytes);
    }

    #[test]
    fn mutated_csv_never_panics(bytes in mutated(CSV.as_bytes().to_vec())) {
        read_everything(&bytes);
    }

    #[test]
    fn mutated_libsvm_never_panics(bytes in mutated(LIBSVM.as_bytes().to_vec())) {
        read_everything(&bytes);
    }

    #[test]
    fn mutated_npz_never_panics(bytes in mutated(NPZ.to_vec())) {
        read_everything(&bytes);
    }

    #[test]
    fn mutated_npy_never_panics(bytes in mutated(npy())) {
        read_everything(&bytes);
    }

    #[test]
    fn mutated_model_never_panics(bytes in mutated(model())) {
        read_everything(&bytes);
    }

    #[test]
    fn mutated_run_file_never_panics(bytes in mutated(TOML.as_bytes().to_vec())) {
        read_everything(&bytes);
    }

    /// Any sparse rows written as LIBSVM text read back as the same CSR arrays (the explicit
    /// zeros kept), with nothing dense on the way.
    #[test]
    fn libsvm_rows_read_back_as_the_same_csr(
        rows in proptest::collection::vec(
            proptest::collection::btree_map(1u32..60, -64i32..64, 0..8),
            1..24,
        ),
    ) {
        let mut text = String::new();
        for (i, row) in rows.iter().enumerate() {
            text.push_str(if i % 3 == 0 { "+1" } else { "-1" });
            for (j, v) in row {
                text.push_str(&format!(" {j}:{}", *v as f32 / 8.0));
            }
            text.push('\n');
        }
        let table = read_libsvm_from(text.as_bytes(), origin(), &LibsvmOptions::default()).unwrap();
        let x = table.x.sparse().expect("LIBSVM reads sparse");
        let widest = rows.iter().flat_map(|r| r.keys()).max().copied().unwrap_or(1);
        prop_assert_eq!((x.n, x.d), (rows.len(), widest as usize));
        let mut start = 0u64;
        for (i, row) in rows.iter().enumerate() {
            let (cols, values) = x.row(i);
            let want: Vec<(u32, f32)> = row.iter().map(|(&j, &v)| (j - 1, v as f32 / 8.0)).collect();
            let got: Vec<(u32, f32)> = cols.iter().copied().zip(values.iter().copied()).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(x.row_start[i], start);
            start += row.len() as u64;
        }
        let rebuilt = bilevel::Csr::new(x.n, x.d, x.row_start.clone(), x.cols.clone(), x.values.clone());
        prop_assert!(rebuilt.is_ok());
    }

    #[test]
    fn libsvm_text_lines_never_panic(lines in proptest::collection::vec("[-+0-9:., #a-z]{0,30}", 0..12)) {
        read_everything(lines.join("\n").as_bytes());
    }
}

#[test]
fn the_valid_inputs_parse() {
    assert_eq!(
        read_csv_from(CSV.as_bytes(), origin(), &CsvOptions::default())
            .unwrap()
            .n,
        3
    );
    let t = read_libsvm_from(LIBSVM.as_bytes(), origin(), &LibsvmOptions::default()).unwrap();
    assert_eq!((t.n, t.d, t.o()), (3, 4, 3));
    assert_eq!(read_npy_bytes(&npy(), origin()).unwrap().0, vec![2, 3]);
    let tiny = read_npz_from(std::io::Cursor::new(NPZ), origin()).unwrap();
    assert_eq!(
        tiny.to_dense(),
        [0.0, 1.5, 0.0, -2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.25, 0.0]
    );
    assert_eq!(model_from_bytes(&model(), origin()).unwrap().params.o, 2);
    assert_eq!(
        RunConfig::from_toml(TOML, origin())
            .unwrap()
            .phases()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn claimed_sizes_do_not_drive_allocations() {
    // A safetensors header claiming 2^60 bytes of tensor data.
    let header = r#"{"weight":{"dtype":"F32","shape":[1073741824,1073741824],"data_offsets":[0,1152921504606846976]},"bias":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend([0u8; 16]);
    let err = model_from_bytes(&bytes, origin()).unwrap_err().to_string();
    assert!(err.contains("not a safetensors file"), "{err}");

    // An NPY shape of 10^12 rows over 24 bytes of data.
    let text = String::from_utf8_lossy(&npy()[10..]).replace("(2, 3)", "(1000000000000, 3)");
    let mut big = b"\x93NUMPY\x01\x00".to_vec();
    big.extend((text.len() as u16 - 24).to_le_bytes());
    big.extend(text.as_bytes());
    let err = read_npy_bytes(&big, origin()).unwrap_err().to_string();
    assert!(
        err.contains("larger than the file") || err.contains("not a valid NPY"),
        "{err}"
    );

    // Found by `cargo fuzz run npy`: an NPY v3 header claiming a 4 GiB header.
    let fuzzed: [u8; 67] = [
        147, 78, 85, 77, 80, 89, 3, 0, 118, 0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 123,
        39, 100, 101, 123, 40, 0, 0, 114, 0, 0, 0, 45, 0, 116, 114, 97, 111, 110, 95, 101, 78, 147,
        100, 114, 32, 32, 108, 115, 101,
    ];
    let err = read_npy_bytes(&fuzzed, origin()).unwrap_err().to_string();
    assert!(err.contains("its header claims"), "{err}");

    // Found by `cargo fuzz run npy` (a hang, not a crash): brackets nested 40 deep send the
    // NPY header's expression parser into exponential backtracking.
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': {}1,, }}",
        "[".repeat(40)
    );
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut nested = b"\x93NUMPY\x01\x00".to_vec();
    nested.extend((header.len() as u16).to_le_bytes());
    nested.extend(header.as_bytes());
    let started = std::time::Instant::now();
    let err = read_npy_bytes(&nested, origin()).unwrap_err().to_string();
    assert!(err.contains("nests brackets too deeply"), "{err}");
    assert!(started.elapsed().as_secs() < 5);

    // A LIBSVM index of 4,294,967,295, and one that is allowed but far beyond the data.
    let err = read_libsvm_from(
        &b"+1 4294967295:1\n"[..],
        origin(),
        &LibsvmOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("above the 16777216 features allowed"),
        "{err}"
    );
    // Read sparse it is three nonzeros; dense it would be 192 MB, which is refused.
    let many_rows = "+1 16000000:1\n".repeat(3);
    let table =
        read_libsvm_from(many_rows.as_bytes(), origin(), &LibsvmOptions::default()).unwrap();
    assert_eq!(table.x.sparse().map(|x| x.nnz()), Some(3));
    let err = table.with_layout(Layout::Dense, origin()).unwrap_err();
    assert!(
        err.to_string()
            .contains("far more than its 3 nonzeros justify"),
        "{err}"
    );
}
