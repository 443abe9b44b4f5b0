//! Every `shaders/*.wgsl` parses and validates with naga (no GPU needed), and every kernel is
//! compiled into the library as it is on disk (after the shared prelude, `common.wgsl`, where
//! it uses it).

use std::path::Path;

use bilevel::gpu::{PRELUDE, SHADERS, WEIGHTS, rows_step_source};

/// Parses and validates `source`, naming `file` on failure.
fn validate(file: &str, source: &str) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{file}: {}", e.emit_to_string(source)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{file}: {}", e.emit_to_string(source)));
}

#[test]
fn every_shader_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".wgsl") && name != "common.wgsl" && name != "weights.wgsl")
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "expected the six kernels in {}, found {files:?}",
        dir.display()
    );
    let prelude = std::fs::read_to_string(dir.join("common.wgsl")).unwrap();
    assert_eq!(
        prelude, PRELUDE,
        "gpu::PRELUDE is not common.wgsl as it is on disk"
    );
    validate("common.wgsl", &prelude);
    // weights.wgsl names its including kernel's bindings: it validates as part of them.
    let weights = std::fs::read_to_string(dir.join("weights.wgsl")).unwrap();
    assert_eq!(
        weights, WEIGHTS,
        "gpu::WEIGHTS is not weights.wgsl as it is on disk"
    );
    for file in &files {
        let source = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            source.starts_with("//") && source.contains("Bindings"),
            "{file} must open with a comment stating its bindings and invariants"
        );
        // The GEMM probe's 16×16 tile is its algorithm, not a tuning knob.
        if file != "probe_gemm.wgsl" {
            assert!(
                source.contains("override WG"),
                "{file}: workgroup size must be the override WG"
            );
        }
        let (_, compiled) = SHADERS
            .iter()
            .find(|(name, _)| name == file)
            .unwrap_or_else(|| panic!("{file} is not in gpu::SHADERS"));
        let with_prelude = format!("{prelude}{source}");
        let with_weights = format!("{prelude}{weights}{source}");
        assert!(
            *compiled == source || *compiled == with_prelude || *compiled == with_weights,
            "{file} is not in gpu::SHADERS as it is on disk"
        );
        validate(file, compiled);
    }
    assert_eq!(
        SHADERS.len(),
        files.len(),
        "gpu::SHADERS lists a file that is not in shaders/"
    );
}

/// `linear_step_rows` is compiled per register-array size: every size the host may ask for
/// validates, and the size really changes (the declaration it replaces is in the file).
#[test]
fn rows_step_validates_at_every_size() {
    for groups in 1..=32 {
        let source = rows_step_source(groups);
        assert!(
            source.contains(&format!("const COLUMN_GROUPS: u32 = {groups}u;")),
            "rows_step_source({groups}) did not set the array size"
        );
        validate(
            &format!("linear_step_rows.wgsl ({groups} column groups)"),
            &source,
        );
    }
}
