#![cfg(test)]
//! `plan.rs`'s tests: the plan over a table of adapters as wgpu 30 reports them, no GPU.

use super::*;

const GIB: u64 = 1 << 30;

/// An adapter as wgpu 30 reports it: (what, profile).
fn gpu(cpu: bool, subgroups: Option<(u32, u32)>, max_binding: u64, storage: u32) -> Profile {
    Profile {
        driver: String::new(),
        cpu,
        subgroups: subgroups.is_some(),
        subgroup_sizes: subgroups.unwrap_or((0, 0)),
        max_binding,
        max_texture_dimension_2d: if cpu { 16_384 } else { 8_192 },
        storage_buffers_per_stage: storage,
        observed_min_subgroup: None,
    }
}

/// The adapters the plan must serve, with the subgroup sizes and binding limits their
/// drivers report through wgpu 30.
fn profiles() -> Vec<(&'static str, Profile)> {
    vec![
        (
            "NVIDIA, Vulkan",
            gpu(false, Some((32, 32)), 4 * GIB - 1, 1_048_576),
        ),
        (
            "NVIDIA, DX12",
            gpu(false, Some((32, 32)), 2 * GIB, 1_000_000),
        ),
        (
            "AMD RDNA, Vulkan",
            gpu(false, Some((32, 64)), 4 * GIB - 1, 1_048_576),
        ),
        (
            "AMD GCN, Vulkan",
            gpu(false, Some((64, 64)), 4 * GIB - 1, 1_048_576),
        ),
        ("Intel Arc, Vulkan", gpu(false, Some((8, 32)), GIB, 200)),
        (
            "Intel integrated, Vulkan",
            gpu(false, Some((8, 32)), GIB, 200),
        ),
        ("Apple, Metal", gpu(false, Some((4, 64)), GIB, 31)),
        (
            "Qualcomm Adreno, Vulkan",
            gpu(false, Some((64, 128)), GIB, 24),
        ),
        ("Arm Mali, Vulkan", gpu(false, Some((16, 16)), GIB, 36)),
        ("DX12 WARP", gpu(true, Some((4, 4)), 2 * GIB, 64)),
        (
            "SwiftShader, Vulkan",
            gpu(true, Some((4, 4)), 128 << 20, 64),
        ),
        (
            "lavapipe, 4 lanes",
            gpu(true, Some((4, 4)), 128 << 20, 1_000_000),
        ),
        (
            "lavapipe, 8 lanes",
            gpu(true, Some((8, 8)), 128 << 20, 1_000_000),
        ),
        (
            "lavapipe, 16 lanes",
            gpu(true, Some((16, 16)), 128 << 20, 1_000_000),
        ),
        ("no subgroups (GL)", gpu(false, None, 128 << 20, 12)),
        // A page asking for nothing gets WebGPU's defaults: 8 storage buffers, no subgroups
        // (bilevel asks for the adapter's limits, which browsers may raise).
        ("browser WebGPU", gpu(false, None, 128 << 20, 8)),
        (
            "browser WebGPU, subgroups",
            gpu(false, Some((4, 128)), 128 << 20, 10),
        ),
    ]
}

/// The profile of [`profiles`] named `name`.
fn profile(name: &str) -> Profile {
    let named = profiles().into_iter().find(|(n, _)| *n == name);
    named.unwrap_or_else(|| panic!("no profile {name}")).1
}

const SHAPES: [(usize, usize, usize); 7] = [
    (1, 1, 1),
    (569, 30, 1),
    (65_536, 1_024, 1),
    (1_797, 64, 10),
    (16_384, 1_024, 64),
    (300, 27_000, 3),
    (200_000, 300, 1),
];

fn auto() -> Request {
    Request {
        kernels: StepKernels::Auto,
        x_source: None,
        chunk_rows: usize::MAX,
    }
}

/// Every kernel of every plan is one the adapter has, within its limits.
#[test]
fn every_profile_gets_a_valid_plan_for_every_shape() {
    for (name, p) in profiles() {
        for (n, d, o) in SHAPES {
            let plan = plan_load(&p, (n, d, o), auto(), &[])
                .unwrap_or_else(|e| panic!("{name}, {n}×{d}→{o}: {e}"));
            let what = format!("{name}, {n}×{d}→{o}: {plan:?}");
            match plan.route.path {
                StepPath::Rows => {
                    let size = p.rows_subgroup_size().expect(&what);
                    let groups = plan.rows_groups.expect(&what);
                    assert!(o == 1 && groups <= p.max_column_groups(), "{what}");
                    assert_eq!(plan.x_stride, (groups * size * 4) as usize, "{what}");
                }
                StepPath::Tiled => assert!(p.tiled_kernels(), "{what}"),
                StepPath::Fused => assert_eq!(o, 1, "{what}"),
                StepPath::Separate => {}
            }
            let binds = match plan.route.path {
                StepPath::Rows | StepPath::Fused => STEP_STORAGE_BINDINGS,
                StepPath::Tiled => TILED_STORAGE_BINDINGS,
                StepPath::Separate => crate::gpu::shaders::PORTABLE_STORAGE_BINDINGS,
            };
            assert!(p.binds(binds), "{what}");
            assert!(!plan.route.x_texture || p.cpu, "{what}");
            assert!(
                plan.x_stride >= d && plan.x_stride.is_multiple_of(4),
                "{what}"
            );
            assert!(
                (plan.rows_per_chunk * plan.x_stride * 4) as u64 <= p.max_binding,
                "{what}"
            );
            assert_eq!(plan.chunk_count, n.div_ceil(plan.rows_per_chunk), "{what}");
            let blocks = n.div_ceil(plan.rows_per_block as usize) as u64 + plan.chunk_count as u64;
            assert!(
                partials_bytes(blocks, o * d + o, plan.x_stride) <= p.max_binding,
                "{what}"
            );
            if let Some(budget) = p.loop_budget() {
                assert!(blocks_loop_iterations(blocks) <= budget, "{what}");
            }
        }
    }
}

/// The path each class of adapter takes for one output over 1,024 features and for 64
/// outputs: what the README's support matrix says.
#[test]
fn each_class_of_adapter_takes_its_path() {
    let path = |name: &str, shape| {
        let p = profile(name);
        plan_load(&p, shape, auto(), &[]).unwrap().route
    };
    let s2 = (65_536, 1_024, 1);
    let s3 = (16_384, 1_024, 64);
    let (rows, tiled, fused, separate) = (
        StepPath::Rows,
        StepPath::Tiled,
        StepPath::Fused,
        StepPath::Separate,
    );
    for (name, one_output, many) in [
        ("NVIDIA, Vulkan", rows, tiled),
        ("AMD GCN, Vulkan", rows, tiled),
        ("AMD RDNA, Vulkan", rows, tiled),
        ("Qualcomm Adreno, Vulkan", rows, tiled),
        ("Intel Arc, Vulkan", fused, tiled),
        ("Apple, Metal", fused, separate),
        ("Arm Mali, Vulkan", fused, tiled),
        ("lavapipe, 8 lanes", rows, tiled),
        ("lavapipe, 4 lanes", fused, separate),
        ("no subgroups (GL)", fused, separate),
        ("browser WebGPU", separate, separate),
        ("browser WebGPU, subgroups", fused, separate),
    ] {
        assert_eq!(path(name, s2).path, one_output, "{name}, S2");
        assert_eq!(path(name, s3).path, many, "{name}, S3");
    }
    assert!(path("lavapipe, 8 lanes", s2).x_texture);
    assert!(!path("NVIDIA, Vulkan", s2).x_texture);
    // Varying sizes: the rows step's workgroup is the smallest subgroup (Intel's 8 lanes hold
    // rows of up to 8 column groups of 8 vec4 on a GPU: 256 features); Apple's 4–64 vary too
    // much for it.
    assert_eq!(path("Intel Arc, Vulkan", (65_536, 256, 1)).path, rows);
    assert_eq!(profile("AMD RDNA, Vulkan").rows_subgroup_size(), Some(32));
    assert_eq!(
        profile("Qualcomm Adreno, Vulkan").rows_subgroup_size(),
        Some(64)
    );
    assert_eq!(profile("Apple, Metal").rows_subgroup_size(), None);
    // Metal reports 4–64 on Apple GPUs, whose SIMD groups are 32 wide: where the lane probe
    // sees 32 in workgroups of 64, the tiled kernels are open (their route check decides);
    // where it sees 4, they are not.
    let seen = |min| Profile {
        observed_min_subgroup: Some(min),
        ..profile("Apple, Metal")
    };
    let tiled_at = |p: &Profile| plan_load(p, s3, auto(), &[]).unwrap().route.path;
    assert_eq!(tiled_at(&seen(32)), tiled);
    assert_eq!(tiled_at(&seen(4)), separate);
    let plan = plan_load(&seen(32), s3, auto(), &[]).unwrap();
    assert!(explain(&seen(32), &plan, s3).contains("32 or more seen by the lane probe"));
}

/// A route verification dropped is avoided where the plan chooses, and taken where the
/// request fixes it.
#[test]
fn dropped_routes_are_avoided_only_where_the_plan_chooses() {
    let lavapipe = profile("lavapipe, 16 lanes");
    let s2 = (65_536, 1_024, 1);
    let texture = Route {
        path: StepPath::Rows,
        x_texture: true,
    };
    let buffer = Route {
        x_texture: false,
        ..texture
    };
    assert_eq!(
        plan_load(&lavapipe, s2, auto(), &[]).unwrap().route,
        texture
    );
    assert_eq!(
        plan_load(&lavapipe, s2, auto(), &[texture]).unwrap().route,
        buffer
    );
    let next = plan_load(&lavapipe, s2, auto(), &[texture, buffer]).unwrap();
    assert_eq!(next.route.path, StepPath::Fused);
    assert_eq!(
        next.x_stride, 1_024,
        "rows no longer padded for linear_step_rows"
    );
    let rows = Request {
        kernels: StepKernels::Rows,
        ..auto()
    };
    assert_eq!(
        plan_load(&lavapipe, s2, rows, &[texture, buffer])
            .unwrap()
            .route,
        buffer,
        "a path the request fixes is taken, reading X from its buffer"
    );
    let every = [
        StepPath::Fused,
        StepPath::Separate,
        StepPath::Tiled,
        StepPath::Rows,
    ]
    .map(|path| Route {
        path,
        x_texture: false,
    });
    let err = plan_load(&lavapipe, s2, auto(), &every).unwrap_err();
    assert!(err.to_string().contains("verification dropped"), "{err}");
}

/// The choices made for lavapipe's sake come from the tuning table, and only CPU
/// adapters get them.
#[test]
fn cpu_only_choices_come_from_the_tuning_table() {
    for (name, p) in profiles() {
        let t = p.tuning();
        assert_eq!(t.x_textures, p.cpu, "{name}");
        assert_eq!(t.loop_budget.is_some(), p.cpu, "{name}");
        assert_eq!(takes_persistent_steps(&p, 1_024, 64), p.cpu, "{name}");
        assert!(
            !takes_persistent_steps(&p, STEPS_MAX_WORK + 1, 64),
            "{name}"
        );
        assert!(
            !takes_persistent_steps(&p, 1_024, MIN_STEPS_PER_DISPATCH - 1),
            "{name}"
        );
        for (n, d, o) in SHAPES {
            let plan = plan_load(&p, (n, d, o), auto(), &[]).unwrap();
            assert!(plan.route.x_texture <= t.x_textures, "{name}");
        }
    }
}

#[test]
fn requests_an_adapter_cannot_serve_are_refused_by_name() {
    for (name, kernels, shape, names) in [
        (
            "Apple, Metal",
            StepKernels::Rows,
            (10, 8, 1),
            "linear_step_rows",
        ),
        (
            "lavapipe, 4 lanes",
            StepKernels::Tiled,
            (10, 8, 2),
            "subgroups",
        ),
        (
            "browser WebGPU",
            StepKernels::Fused,
            (10, 8, 1),
            "storage buffers",
        ),
        (
            "browser WebGPU",
            StepKernels::Rows,
            (10, 8, 1),
            "storage buffers",
        ),
        (
            "browser WebGPU",
            StepKernels::Tiled,
            (10, 8, 2),
            "storage buffers",
        ),
    ] {
        let request = Request { kernels, ..auto() };
        let err = plan_load(&profile(name), shape, request, &[]).unwrap_err();
        assert!(err.to_string().contains(names), "{name}: {err}");
    }
}

/// `devices` says where full-batch steps run as `train_steps`: small batches on CPU adapters
/// whose stages bind its 16 storage buffers, never on GPUs.
#[test]
fn the_explanation_names_train_steps_where_auto_takes_them() {
    let shape = (569, 30, 1);
    for (name, p) in profiles() {
        let plan = plan_load(&p, shape, auto(), &[]).unwrap();
        let why = explain(&p, &plan, shape);
        let steps = p.cpu && p.storage_buffers_per_stage >= STEPS_STORAGE_BINDINGS;
        assert_eq!(why.contains("train_steps, up to"), steps, "{name}: {why}");
    }
    let lavapipe = profile("lavapipe, 8 lanes");
    let s2 = (65_536, 1_024, 1);
    let plan = plan_load(&lavapipe, s2, auto(), &[]).unwrap();
    assert!(!explain(&lavapipe, &plan, s2).contains("train_steps"));
}

/// Adam folds into the next step only on the rows path with its folded entry, without
/// amsgrad, on every parameter, over two steps at least; `Auto` only where the update every
/// block repeats reads little, `RowsFolded` wherever the loops allow.
#[test]
fn adam_folds_into_the_next_step_only_where_it_can_and_pays() {
    // S4-like: 512-row batches in 2 blocks of 256, 129 parameters.
    let s4 = [(512, 256); 4];
    let base = FoldQuery {
        kernels: StepKernels::Auto,
        path: StepPath::Rows,
        has_folded: true,
        adam_without_amsgrad: true,
        every_parameter: true,
        groups: 4,
        n_params: 129,
        blocks: &s4,
        budget: Some(LOOP_BUDGET),
    };
    assert!(fold_updates(&base));
    for (why, q) in [
        (
            "separate path",
            FoldQuery {
                path: StepPath::Separate,
                ..base.clone()
            },
        ),
        (
            "no folded entry",
            FoldQuery {
                has_folded: false,
                ..base.clone()
            },
        ),
        (
            "amsgrad or SGD",
            FoldQuery {
                adam_without_amsgrad: false,
                ..base.clone()
            },
        ),
        (
            "a masked phase",
            FoldQuery {
                every_parameter: false,
                ..base.clone()
            },
        ),
        (
            "one step",
            FoldQuery {
                blocks: &s4[..1],
                ..base.clone()
            },
        ),
        (
            "rows forced",
            FoldQuery {
                kernels: StepKernels::Rows,
                ..base.clone()
            },
        ),
    ] {
        assert!(!fold_updates(&q), "{why}");
    }
    // Full batches of many blocks repeat too much of the update for Auto, not for RowsFolded.
    let full = [(65_536, 256); 2];
    let wide = FoldQuery {
        blocks: &full,
        n_params: 1_025,
        budget: None,
        ..base.clone()
    };
    assert!(!fold_updates(&wide));
    assert!(fold_updates(&FoldQuery {
        kernels: StepKernels::RowsFolded,
        ..wide
    }));
    // The loop budget holds for both.
    let tight = FoldQuery {
        kernels: StepKernels::RowsFolded,
        budget: Some(100),
        ..base
    };
    assert!(!fold_updates(&tight));
}

/// Mesa 25.0's lavapipe at 16 lanes crashes loading X's texture in the rows step: that route
/// is known to fault there (and only there), so verification drops it without running it.
#[test]
fn known_faults_match_their_driver_and_lanes_only() {
    let rows_texture = Route {
        path: StepPath::Rows,
        x_texture: true,
    };
    let mesa = |version: &str, lanes| Profile {
        driver: format!("llvmpipe (LLVM 15.0.6, 512 bits) | llvmpipe Mesa {version} (LLVM 15.0.6)"),
        ..gpu(true, Some((lanes, lanes)), 128 << 20, 1_000_000)
    };
    assert!(
        mesa("25.0.7-2~bpo12+1", 16)
            .known_fault(rows_texture)
            .is_some()
    );
    assert!(
        mesa("25.0.7-2~bpo12+1", 8)
            .known_fault(rows_texture)
            .is_none()
    );
    assert!(mesa("22.3.6", 16).known_fault(rows_texture).is_none());
    let buffer = Route {
        x_texture: false,
        ..rows_texture
    };
    assert!(mesa("25.0.7-2~bpo12+1", 16).known_fault(buffer).is_none());
    // The plan avoids it where it chooses, verified or not.
    let faulty = mesa("25.0.7-2~bpo12+1", 16);
    let dropped = faulty.known_faults();
    assert_eq!(dropped, [rows_texture]);
    let plan = plan_load(&faulty, (1_000, 64, 1), auto(), &dropped).unwrap();
    assert_eq!(plan.route.path, StepPath::Rows);
    assert!(!plan.route.x_texture);
}

/// On GPUs a submission of steps carries at most `submission_work` multiply-adds (OS
/// watchdogs reset a GPU busy for ~2 s), at least one step; CPU adapters have no watchdog and
/// take as many steps as the argument ring holds.
#[test]
fn gpu_submissions_stay_short() {
    let nvidia = profile("NVIDIA, Vulkan");
    let budget = nvidia.tuning().submission_work.unwrap();
    // S2: 65,536 × 1,024 → 1, 2·2^26 multiply-adds a step.
    assert_eq!(
        steps_per_submission(&nvidia, (65_536, 1_024, 1)),
        Some((budget >> 27) as usize)
    );
    // S3: 2^31 a step: two.
    assert_eq!(steps_per_submission(&nvidia, (16_384, 1_024, 64)), Some(2));
    // A step above the budget still runs, alone.
    assert_eq!(steps_per_submission(&nvidia, (1 << 20, 4_096, 64)), Some(1));
    for (name, p) in profiles() {
        let steps = steps_per_submission(&p, (569, 32, 1));
        assert_eq!(steps.is_none(), p.cpu, "{name}");
        if let Some(steps) = steps {
            assert!(steps as u64 * 2 * 569 * 32 <= budget, "{name}");
        }
    }
}
