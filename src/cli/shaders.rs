//! `bilevel shaders --dump DIR`: every module and pipeline the host can build, written for
//! other compilers (Dawn's Tint, naga's SPIR-V, MSL and HLSL back ends). The format is in
//! `docs/shader-dump.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bilevel::gpu::shaders::{self, LAYOUTS, Slot};
use clap::Args;
use serde_json::{Value, json};

/// The manifest's name in a dump.
const MANIFEST: &str = "pipelines.json";

/// Options of `bilevel shaders`.
#[derive(Args, Debug)]
pub struct ShadersArgs {
    /// Write every module (`*.wgsl`, as a browser's WebGPU takes it) and `pipelines.json`
    /// (each pipeline's module, entry point, override constants and binding layout) to DIR.
    #[arg(long, value_name = "DIR")]
    pub dump: PathBuf,
    /// Subgroup sizes to build `linear_step_rows` for (its workgroup is one subgroup).
    #[arg(long, value_delimiter = ',', default_value = "4,8,16,32,64,128")]
    pub subgroup_sizes: Vec<u32>,
    /// Column groups per invocation to unroll `linear_step_rows` for (1 to 32).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,8,16,32")]
    pub column_groups: Vec<u32>,
    /// log2 of the width of X's textures (WebGPU's default limit: 8,192 texels).
    #[arg(long, default_value_t = 13)]
    pub texture_width_log2: u32,
}

/// Runs `bilevel shaders`.
pub fn run(args: &ShadersArgs) -> anyhow::Result<()> {
    if let Some(bad) = args
        .subgroup_sizes
        .iter()
        .find(|s| !(4..=128).contains(*s) || !s.is_power_of_two())
    {
        bail!("--subgroup-sizes: {bad} is not a power of two from 4 to 128 (what WGSL allows)");
    }
    if let Some(bad) = args.column_groups.iter().find(|g| !(1..=32).contains(*g)) {
        bail!("--column-groups: {bad} is not from 1 to 32");
    }
    let modules = shaders::modules(&args.column_groups);
    let pipelines = shaders::pipelines(
        &args.subgroup_sizes,
        &args.column_groups,
        args.texture_width_log2,
    );
    let dir = &args.dump;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("{}", parent.display()))?;
    // Written beside DIR and moved into place, so a failed dump leaves nothing half-written.
    let staging = tempfile::Builder::new()
        .prefix(".bilevel-shaders")
        .tempdir_in(&parent)
        .with_context(|| format!("{}", parent.display()))?;
    let mut files = BTreeMap::new();
    for (i, module) in modules.iter().enumerate() {
        let file = format!("{i:02}-{}.wgsl", file_stem(&module.name));
        let source = if module.subgroups {
            format!("enable subgroups;\n{}", module.source)
        } else {
            module.source.clone()
        };
        std::fs::write(staging.path().join(&file), source)?;
        files.insert(module.name.clone(), file);
    }
    let manifest = json!({
        "bilevel": env!("CARGO_PKG_VERSION"),
        "modules": modules.iter().map(|m| json!({
            "name": m.name,
            "file": files[&m.name],
            "subgroups": m.subgroups,
        })).collect::<Vec<_>>(),
        "layouts": LAYOUTS.iter().map(|(name, slots)| {
            (name.to_string(), Value::from(slots.iter().map(|&s| entry(s)).collect::<Vec<_>>()))
        }).collect::<serde_json::Map<_, _>>(),
        "pipelines": pipelines.iter().map(|p| json!({
            "label": p.label,
            "module": p.module,
            "entry": p.entry,
            "constants": p.constants.iter().map(|&(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "layout": p.layout,
            "storage_buffers": shaders::storage_buffers(shaders::layout(p.layout)),
            "subgroup_size": p.subgroup_size,
            "portable": shaders::PORTABLE_KERNELS.contains(&p.layout),
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        staging.path().join(MANIFEST),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    replace_dir(staging.keep(), dir)?;
    println!(
        "wrote {} modules and {} pipelines to {}",
        modules.len(),
        pipelines.len(),
        dir.display()
    );
    Ok(())
}

/// `name` as a file name: letters, digits, `_` and `.`, the rest `-`, without `.wgsl`.
fn file_stem(name: &str) -> String {
    let stem: String = name
        .replace(".wgsl", "")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    stem.split('-')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// `slot` as WebGPU's `GPUBindGroupLayoutEntry` (less `visibility`: always compute).
fn entry(slot: Slot) -> Value {
    let buffer = |ty: &str, dynamic: bool| json!({"binding": slot.binding(), "buffer": {"type": ty, "hasDynamicOffset": dynamic}});
    let texture = |access: &str| {
        json!({"binding": slot.binding(), "storageTexture": {
            "access": access, "format": "rgba32float", "viewDimension": "2d"}})
    };
    match slot {
        Slot::Args(_) | Slot::Read(_) => buffer("read-only-storage", false),
        Slot::Ring(_) => buffer("read-only-storage", true),
        Slot::Write(_) => buffer("storage", false),
        Slot::Uniform(_) => buffer("uniform", false),
        Slot::Texture(_) => texture("read-only"),
        Slot::WriteTexture(_) => texture("write-only"),
    }
}

/// Moves the finished dump `from` to `to`, replacing an earlier dump there (never a folder
/// that holds anything else).
fn replace_dir(from: PathBuf, to: &Path) -> anyhow::Result<()> {
    if to.exists() {
        let earlier = to.join(MANIFEST).is_file()
            && std::fs::read_dir(to)?.all(|e| {
                e.is_ok_and(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name == MANIFEST || name.ends_with(".wgsl")
                })
            });
        let empty = std::fs::read_dir(to)?.next().is_none();
        if !earlier && !empty {
            let _ = std::fs::remove_dir_all(&from);
            bail!(
                "{}: exists and is not an earlier shader dump; choose another folder",
                to.display()
            );
        }
        std::fs::remove_dir_all(to).with_context(|| format!("{}", to.display()))?;
    }
    std::fs::rename(&from, to).with_context(|| format!("{}", to.display()))
}
