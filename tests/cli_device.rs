//! The real binary's adapter-facing side: `bench`, `devices`, `check` (at lavapipe's other
//! subgroup sizes and as a browser), route verification, the shader dump.

mod common;

use std::process::Command;

use bilevel::gpu::CACHE_DIR_VAR;
use common::cli::*;

/// Runs `bilevel bench` quickly (1/256 of the rows) with `args`, asserts it succeeded and
/// returns its `--json` report.
fn bench_report(name: &str, args: &[&str]) -> serde_json::Value {
    let dir = scratch(name);
    let json = dir.join("bench.json");
    let mut all = vec!["bench", "--shrink", "256"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", json.to_str().unwrap()]);
    let out = bilevel(&all);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    let report = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    report
}

/// `bilevel devices --json`'s entry for the adapter bilevel chooses.
fn chosen_adapter() -> serde_json::Value {
    let devices: serde_json::Value =
        serde_json::from_slice(&bilevel(&["devices", "--json"]).stdout).unwrap();
    devices
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["chosen"] == true)
        .expect("an adapter is chosen")
        .clone()
}

/// Whether the chosen adapter runs the tiled kernels (subgroups of at least 8 invocations,
/// which lavapipe has at its default 256-bit vectors, not at `LP_NATIVE_VECTOR_WIDTH=128`).
fn has_tiled_kernels(adapter: &serde_json::Value) -> bool {
    adapter["subgroups"] == true && adapter["subgroup_sizes"][0].as_u64().unwrap() >= 8
}

/// Asserts that `bilevel bench --kernels tiled` fails, saying why, where the adapter has no
/// tiled kernels.
fn assert_tiled_refused(args: &[&str]) {
    let out = bilevel(&[&["bench", "--shrink", "256"][..], args].concat());
    assert!(
        !out.status.success(),
        "{args:?} ran without the tiled kernels"
    );
    let err = stderr(&out);
    assert!(err.contains("need subgroups of at least 8"), "{err}");
}

#[test]
fn bench_reports_every_figure_for_each_kernel_choice() {
    let tiled = has_tiled_kernels(&chosen_adapter());
    for kernels in ["auto", "tiled", "fused", "separate", "persistent"] {
        let args = ["--shapes", "S1,S4", "--repeats", "1", "--kernels", kernels];
        if kernels == "tiled" && !tiled {
            assert_tiled_refused(&args);
            continue;
        }
        let report = bench_report(&format!("bench-{kernels}"), &args);
        let shapes = report["shapes"].as_array().unwrap();
        assert_eq!(shapes.len(), 2, "{kernels}: {report}");
        for shape in shapes {
            for figure in ["step_ms", "probe_ms", "cpu_step_ms"] {
                let v = shape[figure].as_f64().unwrap_or(f64::NAN);
                assert!(v > 0.0 && v.is_finite(), "{kernels}: {figure} = {v}");
            }
        }
        assert!(shapes[0]["seed_run_s"].as_f64().unwrap() > 0.0);
        assert!(shapes[1]["epoch_ms"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn bench_sweep_times_models_in_lockstep_against_separate_runs() {
    let report = bench_report("bench-sweep", &["--sweep", "--repeats", "1"]);
    let results = report.as_array().unwrap();
    let models: Vec<(&str, u64)> = results
        .iter()
        .map(|r| (r["shape"].as_str().unwrap(), r["models"].as_u64().unwrap()))
        .collect();
    let want = [("S2", 1), ("S2", 4), ("S2", 16), ("S2", 64), ("S2", 256)];
    assert_eq!(models[..5], want, "{report}");
    assert_eq!(models[5..], [("S4", 1), ("S4", 4), ("S4", 16)], "{report}");
    for r in results {
        for figure in [
            "lockstep_step_ms",
            "single_step_ms",
            "ratio",
            "fma_gflops",
            "ratio_bound",
        ] {
            let v = r[figure].as_f64().unwrap_or(f64::NAN);
            assert!(v > 0.0 && v.is_finite(), "{figure} = {v}: {r}");
        }
        let m = r["models"].as_u64().unwrap();
        assert_eq!(r["folds"], if m >= 4 { 4 } else { 2 }, "{r}");
        // Against its own one-model run, the one-model row is 1 exactly.
        if m == 1 {
            assert_eq!(r["ratio_same_kernels"], 1.0, "{r}");
        }
        // The lockstep run steps over every row, one model alone over its fold's training
        // rows: fewer minibatches an epoch (S4 at 1/256: 1,024 rows in batches of 4).
        let (sweep_steps, single_steps) =
            (r["lockstep_steps"].as_u64(), r["single_steps"].as_u64());
        if r["shape"] == "S4" {
            assert_eq!(sweep_steps, Some(256), "{r}");
            assert!(
                single_steps.unwrap() < 256 && single_steps.unwrap() >= 128,
                "{r}"
            );
        } else {
            assert_eq!((sweep_steps, single_steps), (Some(1), Some(1)), "{r}");
        }
    }
}

#[test]
fn bench_measures_an_epoch_against_the_batch_probe() {
    let chosen = chosen_adapter();
    let tiled = ["--shapes", "S4", "--repeats", "3", "--kernels", "tiled"];
    if has_tiled_kernels(&chosen) {
        let report = bench_report("bench-batch-probe", &tiled);
        let s4 = &report["shapes"][0];
        // Without linear_step_rows there is no batch probe: the overhead is over the X probe.
        assert!(s4["batch_probe_epoch_ms"].is_null(), "{s4}");
        assert_eq!(
            s4["overhead_us_per_step"], s4["overhead_vs_x_probe_us_per_step"],
            "{s4}"
        );
    } else {
        assert_tiled_refused(&tiled);
    }
    let sizes = &chosen["subgroup_sizes"];
    if chosen["subgroups"] != true || sizes[0] != sizes[1] {
        return; // no linear_step_rows on this adapter (the tiled case above still ran)
    }
    let report = bench_report(
        "bench-batch-probe-rows",
        &["--shapes", "S4", "--repeats", "3", "--kernels", "rows"],
    );
    let s4 = &report["shapes"][0];
    let batch_probe = s4["batch_probe_epoch_ms"].as_f64().unwrap();
    let epoch = s4["epoch_ms"].as_f64().unwrap();
    assert!(batch_probe > 0.0 && batch_probe.is_finite(), "{s4}");
    for figure in ["overhead_us_per_step", "overhead_vs_x_probe_us_per_step"] {
        assert!(s4[figure].as_f64().unwrap().is_finite(), "{figure}: {s4}");
    }
    // On CPU adapters the step and its probes read X from a texture, and the bench times the
    // probe reading X's buffer as well; `--x-source buffer` reads buffers only.
    let texture = chosen["device_type"] == "Cpu";
    assert_eq!(s4["x_source"], if texture { "texture" } else { "buffer" });
    assert_eq!(
        s4["buffer_probe_ms"].as_f64().is_some_and(|v| v > 0.0),
        texture,
        "{s4}"
    );
    let buffers = bench_report(
        "bench-x-buffer",
        &[
            "--shapes",
            "S4",
            "--repeats",
            "1",
            "--kernels",
            "rows",
            "--x-source",
            "buffer",
        ],
    );
    let buffers = &buffers["shapes"][0];
    assert_eq!(buffers["x_source"], "buffer", "{buffers}");
    assert!(buffers["buffer_probe_ms"].is_null(), "{buffers}");
    // 256 steps of 4 rows at --shrink 256; the overhead is per step, in µs, so within the
    // epoch's and the probe's time per step.
    let steps = s4["n"].as_f64().unwrap() / 4.0;
    let spread = (epoch + batch_probe) * 1e3 / steps;
    assert!(
        s4["overhead_us_per_step"].as_f64().unwrap().abs() <= spread,
        "{s4}"
    );
}

#[test]
fn devices_reports_the_chosen_adapter_and_its_subgroups() {
    let out = bilevel(&["devices", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let adapters = report.as_array().unwrap();
    let chosen: Vec<_> = adapters.iter().filter(|a| a["chosen"] == true).collect();
    assert_eq!(chosen.len(), 1, "{report}");
    let sizes = chosen[0]["subgroup_sizes"].as_array().unwrap();
    let (min, max) = (sizes[0].as_u64().unwrap(), sizes[1].as_u64().unwrap());
    assert!(min >= 1 && min <= max, "{report}");
    let text = stdout(&bilevel(&["devices"]));
    assert!(text.contains("subgroups "), "{text}");
}

#[test]
fn bench_times_by_gpu_timestamps_when_asked() {
    let report = bench_report(
        "bench-timestamps",
        &[
            "--shapes",
            "S1,S4",
            "--repeats",
            "2",
            "--timing",
            "timestamps",
        ],
    );
    assert!(
        report["timing"].as_str().unwrap().contains("timestamps"),
        "{report}"
    );
    for shape in report["shapes"].as_array().unwrap() {
        for figure in ["step_ms", "probe_ms"] {
            let v = shape[figure].as_f64().unwrap_or(f64::NAN);
            assert!(v > 0.0 && v.is_finite(), "{figure} = {v}");
        }
    }
}

#[test]
fn bench_measures_many_outputs_against_both_gemm_probes() {
    let report = bench_report("bench-gemm", &["--shapes", "S3", "--repeats", "1"]);
    let s3 = &report["shapes"][0];
    let probes = s3["gemm_probes"].as_array().unwrap();
    // The register-tile probe is the tiled kernels' forward pass.
    let expected = if has_tiled_kernels(&chosen_adapter()) {
        2
    } else {
        1
    };
    assert_eq!(probes.len(), expected, "{s3}");
    let rates: Vec<f64> = probes.iter().map(|p| p[1].as_f64().unwrap()).collect();
    assert!(rates.iter().all(|r| *r > 0.0 && r.is_finite()), "{s3}");
    let best = rates.iter().copied().fold(0.0, f64::max);
    assert_eq!(s3["gemm_gflop_per_s"].as_f64().unwrap(), best, "{s3}");
    let ratio = s3["step_over_gemm"].as_f64().unwrap();
    let step = s3["gflop_per_s"].as_f64().unwrap();
    assert!((ratio - step / best).abs() <= 1e-9 * ratio, "{s3}");
}

#[test]
fn check_passes_every_step_path_on_this_adapter() {
    let out = bilevel(&["check"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("all checks passed"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    let mut paths = vec!["separate", "fused", "auto"];
    if has_tiled_kernels(&chosen_adapter()) {
        paths.push("tiled");
    } else {
        assert!(text.contains("not on this adapter: tiled"), "{text}");
    }
    for path in paths {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!(", {path}")) && l.ends_with("PASS")),
            "no passing check of the {path} path:\n{text}"
        );
    }
}

/// lavapipe's subgroups are its vector width in 32-bit lanes (`LP_NATIVE_VECTOR_WIDTH`, 256
/// bits by default here): the check again at 4 and 16 lanes proves the kernels at subgroup
/// sizes other than 8, as GPUs have (32 on NVIDIA, 64 on AMD). At 1,024 bits lavapipe (Mesa
/// 22.3 and 25.0) reports 32 lanes but its shuffles and sums stay within halves of 16: the
/// lane probe must drop every subgroup path there, and the check pass on the others.
/// Elsewhere lavapipe's variable changes nothing, and the check runs on the adapter's size.
#[test]
fn check_passes_at_lavapipes_other_subgroup_sizes() {
    let lavapipe = chosen_adapter()["name"]
        .as_str()
        .unwrap()
        .contains("llvmpipe");
    for (bits, lanes) in [
        ("128", "4 lanes"),
        ("512", "16 lanes"),
        ("1024", "32 lanes"),
    ] {
        let env = [("LP_NATIVE_VECTOR_WIDTH", bits)];
        let out = bilevel_with(&["check"], &env);
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "{bits} bits: {text}\n{}",
            stderr(&out)
        );
        assert!(text.contains("all checks passed"), "{bits} bits: {text}");
        if lavapipe {
            let devices = stdout(&bilevel_with(&["devices"], &env));
            assert!(devices.contains(lanes), "{bits} bits: {devices}");
        }
    }
}

/// On an adapter whose subgroup sizes vary (AMD RDNA 32–64, Intel 8–32), `linear_step_rows`
/// runs workgroups of the smallest size, one partly filled subgroup where a pipeline gets a
/// wider one. lavapipe's 8 lanes planned as 4–8 run exactly that: the rows step in workgroups
/// of 4 inside 8-lane subgroups, checked against the CPU reference. The tiled kernels, which
/// need 8 lanes, open there because the lane probe sees 8 (as on Apple GPUs, whose SIMD
/// groups are 32 wide where Metal reports 4–64).
#[test]
fn check_passes_with_the_rows_step_inside_wider_subgroups() {
    let lavapipe = chosen_adapter()["name"]
        .as_str()
        .unwrap()
        .contains("llvmpipe");
    let env = [
        ("LP_NATIVE_VECTOR_WIDTH", "256"),
        ("BILEVEL_SUBGROUP_SIZES", "4,8"),
    ];
    let out = bilevel_with(&["check"], &env);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("all checks passed"), "{text}");
    if lavapipe {
        assert!(text.contains("n=63 d=65 o=1, rows "), "{text}");
        assert!(text.contains("n=1000 d=100 o=10, tiled"), "{text}");
        let devices = stdout(&bilevel_with(&["devices"], &env));
        assert!(devices.contains("workgroups of 4"), "{devices}");
    }
}

/// As a browser gives the adapter (WebGPU's default limits: 8 storage buffers per stage, no
/// subgroups), the portable kernels are what every run takes, and they pass every check; a
/// run trains there, and `devices` says why it takes them.
#[test]
fn check_and_train_pass_as_a_browser_gives_the_adapter() {
    let env = [("BILEVEL_AS_BROWSER", "1")];
    let out = bilevel_with(&["check"], &env);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("all checks passed"), "{text}");
    assert!(text.contains("n=1000 d=100 o=10, separate"), "{text}");
    assert!(!text.contains(", fused"), "{text}");
    assert!(text.contains("not on this adapter: fused"), "{text}");
    let devices = stdout(&bilevel_with(&["devices"], &env));
    assert!(
        devices.contains("8 storage buffers per shader stage") && devices.contains("portable"),
        "{devices}"
    );
}

/// Mesa's device-select layer prints "XDG_RUNTIME_DIR is invalid" on every start where that
/// variable is unset; bilevel switches the layer off there, so a run prints its own output
/// only.
#[test]
fn a_run_without_a_runtime_directory_prints_nothing_of_mesas() {
    let out = Command::new(BIN)
        .args(["devices"])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "bilevel devices wrote to stderr");
    assert!(stdout(&out).contains("* "), "{}", stdout(&out));
}

/// A run verifies the route its plan chose against the CPU reference before it takes it,
/// remembers the verdict in the cache, and takes another route where the cache says the
/// chosen one computed wrongly; `devices` lists the dropped route; `--no-verify` checks and
/// writes nothing.
#[test]
fn runs_verify_their_route_and_avoid_a_dropped_one() {
    let dir = scratch("verify");
    let cache = dir.join("cache");
    let env = [
        (CACHE_DIR_VAR, cache.to_str().unwrap()),
        ("RUST_LOG", "bilevel=info"),
    ];
    let args = [
        "train",
        "--synthetic",
        "300,40,1,5",
        "--local-steps",
        "5",
        "--global-steps",
        "20",
    ];
    // A route's verdict, not the lane probe's: "<adapter> | <driver> | <build> | <what>".
    let is_route = |key: &str| !key.rsplit(" | ").next().unwrap().starts_with("probe:");
    let first = bilevel_with(&args, &env);
    assert!(first.status.success(), "{}", stderr(&first));
    let file = cache.join("verified.json");
    let read = || -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
    };
    let mut verdicts = read();
    let routes: Vec<String> = verdicts.keys().filter(|k| is_route(k)).cloned().collect();
    assert_eq!(routes.len(), 1, "one route verified: {verdicts:?}");
    assert_eq!(verdicts[&routes[0]]["pass"], true, "{verdicts:?}");
    assert!(stderr(&first).contains("verified "), "{}", stderr(&first));
    // Say that route computed wrongly here: the next run takes another and verifies that.
    verdicts[&routes[0]] = serde_json::json!({ "pass": false, "detail": "planted by the test" });
    std::fs::write(&file, serde_json::to_vec(&verdicts).unwrap()).unwrap();
    let second = bilevel_with(&args, &env);
    assert!(second.status.success(), "{}", stderr(&second));
    let after = read();
    let passing: Vec<&String> = after
        .keys()
        .filter(|k| is_route(k) && after[*k]["pass"] == true)
        .collect();
    assert_eq!(passing.len(), 1, "another route verified: {after:?}");
    assert_ne!(passing[0], &routes[0]);
    let devices = stdout(&bilevel_with(&["devices"], &env));
    assert!(
        devices.contains("verification dropped") && devices.contains("planted by the test"),
        "{devices}"
    );
    let quiet = dir.join("no-verify");
    let mut no_verify = args.to_vec();
    no_verify.push("--no-verify");
    let out = bilevel_with(&no_verify, &[(CACHE_DIR_VAR, quiet.to_str().unwrap())]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !quiet.join("verified.json").exists(),
        "--no-verify verified"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bilevel shaders --dump` writes every module (with `enable subgroups;` where it uses
/// them) and a manifest whose pipelines name those modules and layouts; it replaces an earlier
/// dump, refuses a folder holding anything else, and refuses sizes WGSL does not allow.
#[test]
fn shaders_dump_writes_every_module_and_pipeline() {
    let dir = scratch("shaders-dump").join("dump");
    let args = [
        "shaders",
        "--dump",
        dir.to_str().unwrap(),
        "--subgroup-sizes",
        "4,32",
        "--column-groups",
        "1,5",
    ];
    for _ in 0..2 {
        let out = bilevel(&args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("pipelines.json")).unwrap()).unwrap();
    let modules = manifest["modules"].as_array().unwrap();
    // The 13 kernels and probes, linear_step_rows at 1 and 5 column groups, linear_tiled.
    assert_eq!(modules.len(), 16, "{manifest}");
    for m in modules {
        let source = std::fs::read_to_string(dir.join(m["file"].as_str().unwrap())).unwrap();
        assert_eq!(
            source.starts_with("enable subgroups;\n"),
            m["subgroups"] == true,
            "{m}"
        );
    }
    let pipelines = manifest["pipelines"].as_array().unwrap();
    for p in pipelines {
        assert!(modules.iter().any(|m| m["name"] == p["module"]), "{p}");
        assert!(
            manifest["layouts"][p["layout"].as_str().unwrap()].is_array(),
            "{p}"
        );
    }
    let rows: Vec<_> = pipelines
        .iter()
        .filter(|p| {
            p["module"]
                .as_str()
                .unwrap()
                .starts_with("linear_step_rows")
        })
        .collect();
    // 2 column-group counts × 2 sizes × X from buffer or texture × 5 variants × 2 row orders.
    assert_eq!(rows.len(), 80);
    assert!(
        rows.iter()
            .any(|p| p["constants"]["WG"] == 32.0 && p["subgroup_size"] == 32)
    );

    let other = scratch("shaders-dump-other");
    file(&other, "notes.txt", b"mine");
    let out = bilevel(&["shaders", "--dump", other.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not an earlier shader dump"),
        "{}",
        stderr(&out)
    );
    assert!(other.join("notes.txt").exists() && !other.join("pipelines.json").exists());

    let out = bilevel(&[
        "shaders",
        "--dump",
        dir.to_str().unwrap(),
        "--subgroup-sizes",
        "48",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("48 is not a power of two"),
        "{}",
        stderr(&out)
    );
}
