//! Every `shaders/*.wgsl` parses and validates with naga (no GPU needed), and every kernel is
//! compiled into the library as it is on disk (after the shared prelude, `common.wgsl`, where
//! it uses it).

use std::path::Path;

use bilevel::gpu::shaders::{self, Slot};
use bilevel::gpu::{LOADS, PRELUDE, SHADERS, args, rows_step_source, tiled_source};

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
                "let w_{last} = weights4(0u, {last}u * WG + lane, dims.d);"
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

/// `source` parsed and validated, with its analysis (which entry point uses which global).
fn reflect(name: &str, source: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    (module, info)
}

/// What a shader's global at one binding is, in the host's terms: whether `slot` may bind it.
fn binds(module: &naga::Module, var: &naga::GlobalVariable, slot: Slot) -> bool {
    use naga::{AddressSpace, ImageClass, StorageAccess, StorageFormat, TypeInner};
    match (var.space, slot) {
        (AddressSpace::Uniform, Slot::Uniform(_)) => true,
        (AddressSpace::Storage { access }, Slot::Args(_) | Slot::Ring(_) | Slot::Read(_)) => {
            !access.contains(StorageAccess::STORE)
        }
        (AddressSpace::Storage { access }, Slot::Write(_)) => access.contains(StorageAccess::STORE),
        (AddressSpace::Handle, Slot::Texture(_) | Slot::WriteTexture(_)) => {
            match module.types[var.ty].inner {
                TypeInner::Image {
                    class:
                        ImageClass::Storage {
                            format: StorageFormat::Rgba32Float,
                            access,
                        },
                    arrayed: false,
                    ..
                } => match slot {
                    Slot::Texture(_) => access == StorageAccess::LOAD,
                    _ => access == StorageAccess::STORE,
                },
                _ => false,
            }
        }
        _ => false,
    }
}

/// Every pipeline the host builds binds, through its layout (`shaders::LAYOUTS`), exactly
/// what its entry point declares: each global the entry point uses has a slot of its kind
/// (uniform, read-only or writable storage, readable or writable rgba32float texture), and
/// every slot names a binding the module declares, of that kind, in group 0.
#[test]
fn every_layout_matches_its_shaders_bindings() {
    let sizes = [4, 8, 16, 32, 64, 128];
    let groups = [1, 2, 32];
    let modules: Vec<_> = shaders::modules(&groups)
        .into_iter()
        .map(|m| {
            let reflected = reflect(&m.name, &m.source);
            (m.name, reflected)
        })
        .collect();
    let pipelines = shaders::pipelines(&sizes, &groups, 13);
    assert!(pipelines.len() > 100, "only {} pipelines", pipelines.len());
    for p in &pipelines {
        let (_, (module, info)) = modules
            .iter()
            .find(|(name, _)| *name == p.module)
            .unwrap_or_else(|| panic!("{}: no module {}", p.label, p.module));
        let slots = shaders::layout(p.layout);
        let index = module
            .entry_points
            .iter()
            .position(|e| e.name == p.entry)
            .unwrap_or_else(|| panic!("{}: no entry point {}", p.label, p.entry));
        let uses = info.get_entry_point(index);
        for (handle, var) in module.global_variables.iter() {
            let Some(binding) = &var.binding else {
                continue;
            };
            if uses[handle].is_empty() {
                continue;
            }
            assert_eq!(
                binding.group, 0,
                "{}: {:?} outside group 0",
                p.label, var.name
            );
            let slot = slots.iter().find(|s| s.binding() == binding.binding);
            assert!(
                slot.is_some_and(|&s| binds(module, var, s)),
                "{}: layout {} binds {:?} at binding {} as {slot:?}, but the shader declares {:?} ({:?})",
                p.label,
                p.layout,
                var.name,
                binding.binding,
                var.space,
                module.types[var.ty].inner,
            );
        }
        for &slot in slots {
            let declared = module.global_variables.iter().find(|(_, v)| {
                v.binding.as_ref().map(|b| (b.group, b.binding)) == Some((0, slot.binding()))
            });
            assert!(
                declared.is_some_and(|(_, v)| binds(module, v, slot)),
                "{}: layout {} has {slot:?}, which {} does not declare as such",
                p.label,
                p.layout,
                p.module,
            );
        }
    }
}

/// Every argument struct the host uploads has the size and member offsets of the WGSL struct
/// it fills, member for member by name (padding aside), as naga lays it out.
#[test]
fn every_argument_struct_matches_its_wgsl_struct() {
    let modules: Vec<_> = shaders::modules(&[1])
        .into_iter()
        .map(|m| reflect(&m.name, &m.source).0)
        .collect();
    for arg in args::arg_structs() {
        let (members, span) = modules
            .iter()
            .flat_map(|m| m.types.iter().map(|(_, t)| t))
            .find_map(|t| match &t.inner {
                naga::TypeInner::Struct { members, span }
                    if t.name.as_deref() == Some(arg.wgsl) =>
                {
                    Some((members.clone(), *span))
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no WGSL struct {} (for {})", arg.wgsl, arg.rust));
        assert_eq!(
            arg.size, span,
            "{} is {} bytes, WGSL's {} is {span}",
            arg.rust, arg.size, arg.wgsl
        );
        let wgsl: Vec<(&str, u32)> = members
            .iter()
            .filter_map(|m| m.name.as_deref().map(|n| (n, m.offset)))
            .filter(|(n, _)| !n.starts_with('_'))
            .collect();
        assert_eq!(
            arg.fields, wgsl,
            "{} (left) and WGSL's {} (right) differ in members or offsets",
            arg.rust, arg.wgsl
        );
    }
}
