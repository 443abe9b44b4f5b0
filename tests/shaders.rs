//! Every `shaders/*.wgsl` parses and validates with naga (no GPU needed), and every kernel is
//! compiled into the library as it is on disk (after the shared prelude, `common.wgsl`, where
//! it uses it).

use std::path::Path;

use bilevel::gpu::{LOADS, PRELUDE, SHADERS, rows_step_source, tiled_source};

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
        .filter(|name| name.ends_with(".wgsl") && name != "common.wgsl" && name != "loads.wgsl")
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
    // loads.wgsl names its including kernel's bindings: it validates as part of them.
    let loads = std::fs::read_to_string(dir.join("loads.wgsl")).unwrap();
    assert_eq!(
        loads, LOADS,
        "gpu::LOADS is not loads.wgsl as it is on disk"
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
        let with_loads = format!("{prelude}{loads}{source}");
        assert!(
            *compiled == source || *compiled == with_prelude || *compiled == with_loads,
            "{file} is not in gpu::SHADERS as it is on disk"
        );
        // linear_step_rows and linear_tiled are WGSL once their column groups are unrolled
        // (tested below).
        if *file != "linear_step_rows.wgsl" && *file != "linear_tiled.wgsl" {
            validate(file, compiled);
        }
    }
    assert_eq!(
        SHADERS.len(),
        files.len(),
        "gpu::SHADERS lists a file that is not in shaders/"
    );
}

/// `linear_step_rows` is compiled per count of column groups: every count the host may ask
/// for validates, and its blocks really unroll (the last group's names are there, no `_m`
/// name is left).
#[test]
fn rows_step_validates_at_every_size() {
    for groups in 1..=32 {
        let source = rows_step_source(groups);
        let last = groups - 1;
        assert!(
            source.contains(&format!(
                "let w_{last} = weights4(0u, {last}u * WG + lid, dims.d);"
            )) && !source.contains(&format!("w_{groups} "))
                && !source.contains("_m ")
                && !source.lines().any(|line| line.trim() == "// #unroll m"),
            "rows_step_source({groups}) did not unroll its column groups {groups} times"
        );
        validate(
            &format!("linear_step_rows.wgsl ({groups} column groups)"),
            &source,
        );
    }
}

/// `linear_tiled` is compiled with its column groups unrolled for the most the partial takes:
/// that validates, and its blocks really unroll.
#[test]
fn tiled_validates_unrolled() {
    let source = tiled_source();
    assert!(
        source.contains("let c_3 = min(c0 + 3u * WG + lid, s4 - 1u);")
            && !source.contains("c_4 ")
            && !source.contains("_m ")
            && !source.lines().any(|line| line.trim() == "// #unroll m"),
        "tiled_source() did not unroll its column groups four times"
    );
    validate("linear_tiled.wgsl (unrolled)", &source);
}
