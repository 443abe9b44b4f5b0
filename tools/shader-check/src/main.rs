//! `shader-check DIR`: every pipeline of a `bilevel shaders --dump DIR` (see
//! `docs/shader-dump.md`) through naga's back ends, as wgpu would translate it: its override
//! constants applied, then SPIR-V 1.3 (validated by `spirv-val --target-env vulkan1.1`), MSL
//! 2.4 and HLSL shader model 6.0. Prints one line per failure and a summary; exits 1 on any
//! failure.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use serde_json::Value;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("shader-check: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let Some(dir) = std::env::args_os().nth(1) else {
        bail!("usage: shader-check DIR (a `bilevel shaders --dump DIR`)");
    };
    let dir = Path::new(&dir);
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("pipelines.json"))
            .with_context(|| format!("{}", dir.join("pipelines.json").display()))?,
    )?;
    let spirv_val = Command::new("spirv-val").arg("--version").output().is_ok();
    if !spirv_val {
        bail!("spirv-val not found: install Debian's spirv-tools");
    }
    let mut failures = 0;
    let mut fail = |what: &str, message: String| {
        failures += 1;
        println!("FAIL {what}: {message}");
    };
    let mut modules: HashMap<String, (naga::Module, ModuleInfo)> = HashMap::new();
    for m in manifest["modules"].as_array().context("no modules")? {
        let name = m["name"].as_str().context("module without a name")?;
        let file = m["file"].as_str().context("module without a file")?;
        let source = std::fs::read_to_string(dir.join(file))?;
        // naga 30 takes subgroup operations without the `enable` a browser needs.
        let source = source
            .strip_prefix("enable subgroups;\n")
            .unwrap_or(&source);
        let module = match naga::front::wgsl::parse_str(source) {
            Ok(module) => module,
            Err(e) => {
                fail(name, e.emit_to_string(source));
                continue;
            }
        };
        match Validator::new(ValidationFlags::all(), Capabilities::all()).validate(&module) {
            Ok(info) => {
                modules.insert(name.to_string(), (module, info));
            }
            Err(e) => fail(name, e.emit_to_string(source)),
        }
    }
    let scratch = tempfile::tempdir()?;
    let pipelines = manifest["pipelines"].as_array().context("no pipelines")?;
    let mut checked = 0;
    for (i, p) in pipelines.iter().enumerate() {
        let label = p["label"].as_str().unwrap_or("?");
        let entry = p["entry"].as_str().unwrap_or("main");
        let Some((module, info)) = modules.get(p["module"].as_str().unwrap_or("")) else {
            fail(label, "its module did not compile".into());
            continue;
        };
        let constants: naga::back::PipelineConstants = p["constants"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(f64::NAN)))
            .collect();
        let stage = naga::ShaderStage::Compute;
        let (module, info) = match naga::back::pipeline_constants::process_overrides(
            module,
            info,
            Some((stage, entry)),
            &constants,
        ) {
            Ok(done) => done,
            Err(e) => {
                fail(label, format!("override constants: {e}"));
                continue;
            }
        };
        // SPIR-V as wgpu's Vulkan back end writes it for subgroups (1.3), then spirv-val.
        let spv_options = spv::Options {
            lang_version: (1, 3),
            ..Default::default()
        };
        let spv_pipeline = spv::PipelineOptions {
            shader_stage: stage,
            entry_point: entry.to_string(),
        };
        match spv::write_vec(&module, &info, &spv_options, Some(&spv_pipeline)) {
            Ok(words) => {
                let file = scratch.path().join(format!("{i}.spv"));
                std::fs::write(
                    &file,
                    words
                        .iter()
                        .flat_map(|w| w.to_le_bytes())
                        .collect::<Vec<u8>>(),
                )?;
                let out = Command::new("spirv-val")
                    .args(["--target-env", "vulkan1.1"])
                    .arg(&file)
                    .output()?;
                if !out.status.success() {
                    let text = String::from_utf8_lossy(&out.stdout).to_string()
                        + &String::from_utf8_lossy(&out.stderr);
                    fail(label, format!("spirv-val: {}", text.trim()));
                }
                std::fs::remove_file(&file)?;
            }
            Err(e) => fail(label, format!("SPIR-V: {e}")),
        }
        let msl_options = msl::Options {
            lang_version: (2, 4),
            ..Default::default()
        };
        let msl_pipeline = msl::PipelineOptions {
            entry_point: Some((stage, entry.to_string())),
            ..Default::default()
        };
        if let Err(e) = msl::write_string(&module, &info, &msl_options, &msl_pipeline) {
            fail(label, format!("MSL: {e}"));
        }
        let hlsl_options = hlsl::Options {
            shader_model: hlsl::ShaderModel::V6_0,
            ..Default::default()
        };
        let hlsl_pipeline = hlsl::PipelineOptions {
            entry_point: Some((stage, entry.to_string())),
        };
        let mut out = String::new();
        if let Err(e) =
            hlsl::Writer::new(&mut out, &hlsl_options, &hlsl_pipeline).write(&module, &info, None)
        {
            fail(label, format!("HLSL: {e}"));
        }
        checked += 1;
    }
    let by_module: BTreeMap<&str, usize> = pipelines.iter().fold(BTreeMap::new(), |mut m, p| {
        *m.entry(p["module"].as_str().unwrap_or("?")).or_default() += 1;
        m
    });
    println!(
        "naga: {} of {} modules, {checked} pipelines through SPIR-V (spirv-val), MSL and HLSL, over {} modules; {failures} failures",
        modules.len(),
        manifest["modules"].as_array().map_or(0, Vec::len),
        by_module.len(),
    );
    Ok(failures == 0)
}
