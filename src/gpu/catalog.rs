//! Every module and pipeline the host may build, enumerated: what `bilevel shaders --dump`
//! writes for other compilers and `tests/shaders.rs` validates. The pieces (sources,
//! override constants, layouts) come from [`super::shaders`]; no wgpu here.

use serde::Serialize;

use super::shaders::*;

/// One module the host compiles.
#[derive(Clone, Debug, Serialize)]
pub struct Module {
    /// Its name: the file under `shaders/`, with the unrolled column groups where it has them.
    pub name: String,
    /// The source as compiled (prelude included, blocks unrolled).
    #[serde(skip)]
    pub source: String,
    /// Whether it uses subgroup operations: a browser's WebGPU needs `enable subgroups;`.
    pub subgroups: bool,
}

/// One compute pipeline the host builds.
#[derive(Clone, Debug, Serialize)]
pub struct Pipeline {
    pub label: String,
    /// [`Module::name`] of its module.
    pub module: String,
    pub entry: &'static str,
    pub constants: Vec<Constant>,
    /// Its layout's name in [`LAYOUTS`].
    pub layout: &'static str,
    /// Subgroup lanes it assumes (`linear_step_rows`: its workgroup is one subgroup).
    pub subgroup_size: Option<u32>,
}

/// Whether `source` uses a subgroup operation or builtin outside its comments.
pub fn uses_subgroups(source: &str) -> bool {
    source
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .any(|code| code.contains("subgroup"))
}

/// Every module the host may build: each shader file, `linear_step_rows` at every count of
/// column groups in `rows_groups`, and `linear_tiled` unrolled.
pub fn modules(rows_groups: &[u32]) -> Vec<Module> {
    let module = |name: String, source: String| Module {
        subgroups: uses_subgroups(&source),
        name,
        source,
    };
    let mut modules: Vec<Module> = SHADERS
        .iter()
        .filter(|(file, _)| !matches!(*file, "linear_step_rows.wgsl" | "linear_tiled.wgsl"))
        .map(|(file, source)| module(file.to_string(), source.to_string()))
        .collect();
    modules.extend(
        rows_groups
            .iter()
            .map(|&g| module(rows_module(g), rows_step_source(g))),
    );
    modules.push(module("linear_tiled.wgsl".into(), tiled_source()));
    modules
}

/// The name of `linear_step_rows` unrolled for `groups` column groups.
pub fn rows_module(groups: u32) -> String {
    format!("linear_step_rows.wgsl ({groups} column groups)")
}

/// Every pipeline the host may build on an adapter whose textures are 2^`shift` texels wide:
/// `linear_step_rows` at each subgroup size of `sizes` and column groups of `rows_groups`,
/// by row index and for contiguous rows, each of its entry points; the tiled kernels at every
/// tile; every other kernel as it is built.
pub fn pipelines(sizes: &[u32], rows_groups: &[u32], shift: u32) -> Vec<Pipeline> {
    let mut out = Vec::new();
    let mut push = |label: String, module: &str, entry, constants: Vec<Constant>, layout, size| {
        out.push(Pipeline {
            label,
            module: module.to_string(),
            entry,
            constants,
            layout,
            subgroup_size: size,
        })
    };
    let simple: [(&str, &str, &str, &[Constant]); 16] = [
        ("linear_forward", "linear_forward.wgsl", "main", &WG),
        ("bce", "bce.wgsl", "main", &WG),
        (
            "linear_backward.partial",
            "linear_backward.wgsl",
            "partial",
            &WG,
        ),
        (
            "linear_backward.total",
            "linear_backward.wgsl",
            "total",
            &WG,
        ),
        ("linear_step", "linear_step.wgsl", "main", &WG),
        ("sparse_linear.gather", "sparse_linear.wgsl", "gather", &WG),
        ("sparse_linear.sum", "sparse_linear.wgsl", "sum", &WG),
        ("sparse_linear.clear", "sparse_linear.wgsl", "clear", &WG),
        (
            "sparse_linear.transpose",
            "sparse_linear.wgsl",
            "transpose",
            &WG,
        ),
        ("reduce", "reduce.wgsl", "main", &WG),
        ("sgd", "sgd.wgsl", "main", &OPTIMIZER),
        ("adam", "adam.wgsl", "main", &OPTIMIZER),
        ("train_steps", "train_steps.wgsl", "main", &WG),
        ("probe_read", "probe_read.wgsl", "main", &WG),
        ("probe_gemm", "probe_gemm.wgsl", "main", &[]),
        ("probe_fma", "probe_fma.wgsl", "main", &WG),
    ];
    for (name, module, entry, constants) in simple {
        push(name.into(), module, entry, constants.to_vec(), name, None);
    }
    for lanes in PORTABLE_OUT_LANES {
        for (label, module, entry, layout) in PORTABLE_TILE_ENTRIES {
            let constants = portable_constants(lanes);
            push(
                portable_label(label, lanes),
                module,
                entry,
                constants,
                layout,
                None,
            );
        }
    }
    let with = |base: &[Constant], extra: Constant| [base, &[extra]].concat();
    push(
        "linear_step (contiguous rows)".into(),
        "linear_step.wgsl",
        "main",
        with(&WG, ("CONTIGUOUS", 1.0)),
        "linear_step",
        None,
    );
    push(
        "train_steps (sgd)".into(),
        "train_steps.wgsl",
        "main",
        with(&WG, ("ADAM", 0.0)),
        "train_steps",
        None,
    );
    push(
        "probe_read (texture)".into(),
        "probe_read.wgsl",
        "main_texture",
        WG.to_vec(),
        "probe_read",
        None,
    );
    for size in sizes.iter().copied().filter(|s| s.is_power_of_two()) {
        push(
            format!("probe_lanes ({size} lanes)"),
            "probe_lanes.wgsl",
            "main",
            vec![("WG", f64::from(size))],
            "probe_lanes",
            Some(size),
        );
    }
    for &groups in rows_groups {
        let module = rows_module(groups);
        for &size in sizes {
            for x_texture in [false, true] {
                let label = format!(
                    "linear_step_rows ({groups} column groups, {size} lanes, X from its {})",
                    x_from(x_texture)
                );
                let outputs = rows_constants(size, x_texture, shift, false);
                let train = rows_constants(size, x_texture, shift, true);
                let variants = [
                    ("main", outputs.clone(), "linear_step", ""),
                    ("main", train.clone(), "linear_step", " train"),
                    (
                        "main",
                        with(&train, ("GRAD_GROUPS", 1.0)),
                        "linear_step",
                        " train, first group's gradients",
                    ),
                    ("probe", outputs, "linear_step", " probe"),
                    (
                        "main_folded",
                        train,
                        "linear_step_rows.main_folded",
                        " folded",
                    ),
                ];
                for (entry, constants, layout, what) in variants {
                    let contiguous = with(&constants, ("CONTIGUOUS", 1.0));
                    push(
                        format!("{label}{what}"),
                        &module,
                        entry,
                        constants,
                        layout,
                        Some(size),
                    );
                    push(
                        format!("{label}{what}, contiguous rows"),
                        &module,
                        entry,
                        contiguous,
                        layout,
                        Some(size),
                    );
                }
            }
        }
    }
    push(
        "linear_tiled.pack_weights".into(),
        "linear_tiled.wgsl",
        "pack_weights",
        pack_constants(shift),
        "linear_tiled.pack_weights",
        None,
    );
    for outputs in TILE_OUTPUT_COUNTS {
        for x_texture in [false, true] {
            for row_outputs in [false, true] {
                push(
                    tiled_forward_label(outputs, x_texture, row_outputs),
                    "linear_tiled.wgsl",
                    "forward",
                    tiled_forward_constants(outputs, x_texture, row_outputs, shift),
                    "linear_tiled.forward",
                    None,
                );
            }
            for groups in TILED_COLUMN_GROUPS {
                push(
                    tiled_partial_label(outputs, groups, x_texture),
                    "linear_tiled.wgsl",
                    "partial",
                    tiled_partial_constants(outputs, groups, x_texture, shift),
                    "linear_tiled.partial",
                    None,
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subgroup_use_is_read_from_code_not_comments() {
        assert!(uses_subgroups("let s = subgroupAdd(x);"));
        assert!(!uses_subgroups("// one subgroup per row\nlet s = x;"));
        let modules = modules(&[1]);
        let uses = |name: &str| {
            modules
                .iter()
                .find(|m| m.name.starts_with(name))
                .unwrap()
                .subgroups
        };
        assert!(uses("linear_step_rows") && uses("linear_tiled") && uses("probe_lanes"));
        assert!(!uses("linear_step.wgsl") && !uses("adam") && !uses("reduce"));
    }

    #[test]
    fn every_pipeline_names_a_module_and_a_layout() {
        let modules = modules(&[1, 32]);
        let pipelines = pipelines(&[8, 32], &[1, 32], 12);
        for p in &pipelines {
            assert!(
                modules.iter().any(|m| m.name == p.module),
                "{}: no module {}",
                p.label,
                p.module
            );
            assert!(
                !layout(p.layout).is_empty(),
                "{}: no layout {}",
                p.label,
                p.layout
            );
        }
        let labels: std::collections::HashSet<_> = pipelines.iter().map(|p| &p.label).collect();
        assert_eq!(labels.len(), pipelines.len(), "two pipelines share a label");
    }
}
