//! Verification on the user's own adapter: before a run takes a route (a step path and where
//! it reads X from) that this adapter, driver and build of bilevel have not been seen to
//! compute correctly in the run's kernel configuration, the route runs a small problem of
//! that configuration against the CPU reference, and a probe checks what the subgroup paths
//! assume of subgroups. (The rows step's folded Adam update is not part of a route check:
//! `bilevel check` compares it.) A route that disagrees is dropped for the adapter and
//! the plan takes the next one. Verdicts are remembered in a small JSON file under the
//! platform's cache directory, so each check costs once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::context::GpuContext;
use super::plan::{Route, StepPath};
use super::shaders::{SHADERS, WORKGROUP_SIZE, partial_tile, portable_tile};
use super::{GpuBackend, StepKernels, XSource, probe};
use crate::selfcheck::{Comparison, compare_kernels, compare_runs, random_problem};
use crate::{
    AdamConfig, Backend, Batching, Optimizer, ParamSubset, Phase, Result, SgdConfig, StopRule, data,
};

/// Environment variable naming the folder of the verification cache (default: the
/// platform's cache directory, `bilevel/` in it).
pub const CACHE_DIR_VAR: &str = "BILEVEL_CACHE_DIR";
/// The cache's file name in that folder.
const CACHE_FILE: &str = "verified.json";
/// Floats of X a route check's problem holds at most (its rows shrink for long rows).
const CHECK_FLOATS: usize = 1 << 22;
/// Rows of a route check's problem: straddles 8-row tiles, subgroups of 4 to 64 lanes and a
/// workgroup, and splits into two minibatches.
const CHECK_ROWS: usize = 70;

/// What verification found of one route or probe.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// It computed what the CPU reference did (or what the probe must read).
    pub pass: bool,
    /// The failing comparison with its numbers, or what was checked.
    pub detail: String,
    /// The smallest and largest subgroup sizes a lane probe saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizes: Option<(u32, u32)>,
}

/// The verdicts for one adapter, driver and build, kept in memory and in the cache file.
pub(crate) struct Verifier {
    enabled: AtomicBool,
    /// Adapter, driver and build: the first part of every cache key.
    identity: String,
    file: Option<PathBuf>,
    verdicts: Mutex<BTreeMap<String, Verdict>>,
}

impl Verifier {
    /// The verifier of an adapter described by `identity` (name, backend, ids and driver),
    /// with the verdicts the cache file already holds for it.
    pub(crate) fn new(identity: &str) -> Self {
        let identity = format!("{identity} | bilevel {}", build_id());
        let file = std::env::var_os(CACHE_DIR_VAR)
            .map(PathBuf::from)
            .or_else(|| dirs::cache_dir().map(|d| d.join("bilevel")))
            .map(|dir| dir.join(CACHE_FILE));
        let verdicts = file
            .as_ref()
            .map(read_cache)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(key, v)| {
                key.strip_prefix(&format!("{identity} | "))
                    .map(|what| (what.to_string(), v))
            })
            .collect();
        Self {
            enabled: AtomicBool::new(true),
            identity,
            file,
            verdicts: Mutex::new(verdicts),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub(crate) fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Every verdict known for this adapter, by what was checked.
    pub(crate) fn verdicts(&self) -> BTreeMap<String, Verdict> {
        self.verdicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The verdict on `what`, if one is known.
    fn known(&self, what: &str) -> Option<Verdict> {
        self.verdicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(what)
            .cloned()
    }

    /// The verdict on `what`, computing it with `check` the first time.
    fn verdict(&self, what: &str, check: impl FnOnce() -> Result<Verdict>) -> Result<Verdict> {
        if let Some(v) = self.known(what) {
            return Ok(v);
        }
        let verdict = check()?;
        if verdict.pass {
            log::info!("verified {what}: {}", verdict.detail);
        } else {
            log::warn!("dropped {what} on this adapter: {}", verdict.detail);
        }
        self.verdicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(what.to_string(), verdict.clone());
        self.save(what, &verdict);
        Ok(verdict)
    }

    /// Adds one verdict to the cache file (written whole and renamed into place, so readers
    /// never see half of it). A cache that cannot be written costs a check next time only.
    fn save(&self, what: &str, verdict: &Verdict) {
        let Some(file) = &self.file else { return };
        let mut all = read_cache(file);
        all.insert(format!("{} | {what}", self.identity), verdict.clone());
        let written = (|| -> std::io::Result<()> {
            let dir = file.parent().unwrap_or(file.as_path());
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            serde_json::to_writer_pretty(&mut tmp, &all)?;
            tmp.persist(file)?;
            Ok(())
        })();
        if let Err(e) = written {
            log::warn!(
                "could not write the verification cache {}: {e}",
                file.display()
            );
        }
    }
}

/// The cache file's verdicts; an unreadable or malformed file counts as empty.
fn read_cache(file: &PathBuf) -> BTreeMap<String, Verdict> {
    std::fs::read(file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The crate's version and a digest of every shader: a verdict holds for one build's kernels.
fn build_id() -> String {
    let mut digest = Sha256::new();
    for (name, source) in SHADERS {
        digest.update(name.as_bytes());
        digest.update(source.as_bytes());
    }
    let hex: String = digest.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{} ({hex})", env!("CARGO_PKG_VERSION"))
}

/// The lane probe's verdict in the tiled kernels' workgroups (of 64).
fn probe_what(wg: u32) -> String {
    format!("probe: subgroups in workgroups of {wg}")
}

/// Whether the adapter's subgroups are what the subgroup kernels assume: the lane probe in
/// the tiled kernels' workgroups (of 64, wherever the adapter has subgroups: what it sees
/// there may open the tiled kernels, see [`observed_min_subgroup`]) and in the rows step's
/// (one subgroup each). `false` drops every subgroup path.
pub(crate) fn subgroups_work(ctx: &GpuContext) -> Result<bool> {
    let profile = ctx.profile();
    let mut sizes = Vec::new();
    if profile.may_take_tiled_kernels() {
        sizes.push(WORKGROUP_SIZE);
    }
    sizes.extend(profile.rows_subgroup_size());
    sizes.dedup();
    for wg in sizes {
        let verdict = ctx.verifier().verdict(&probe_what(wg), || {
            Ok(match probe::lanes(ctx, wg, profile.subgroup_sizes)? {
                Ok((min, max)) => Verdict {
                    pass: true,
                    detail: format!(
                        "sizes ({min}–{max} seen), lanes, sums, shuffles and broadcasts as assumed"
                    ),
                    sizes: Some((min, max)),
                },
                Err(why) => Verdict {
                    pass: false,
                    detail: why,
                    sizes: None,
                },
            })
        })?;
        if !verdict.pass {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The smallest subgroup the lane probe saw in workgroups of 64, once [`subgroups_work`] has
/// passed it.
pub(crate) fn observed_min_subgroup(ctx: &GpuContext) -> Option<u32> {
    let verdict = ctx.verifier().known(&probe_what(WORKGROUP_SIZE))?;
    verdict.pass.then_some(verdict.sizes?.0)
}

/// Whether `route` computes a problem of `d` features and `o` outputs as the CPU reference
/// does on this adapter (from the cache, or checked now). A verdict holds for the route's
/// kernel configuration — the pipelines a shape compiles — so shapes that share it share it.
pub(crate) fn route_works(ctx: &Arc<GpuContext>, route: Route, d: usize, o: usize) -> Result<bool> {
    let what = match configuration(ctx, route, d, o) {
        Some(config) => format!("{route}, {config}"),
        None => route.to_string(),
    };
    let verdict =
        ctx.verifier()
            .verdict(&what, || match ctx.usable_profile().known_fault(route) {
                Some(fault) => Ok(Verdict {
                    pass: false,
                    detail: format!("known fault, not run: {}", fault.what),
                    sizes: None,
                }),
                None => check_route(ctx, route, d, o),
            })?;
    Ok(verdict.pass)
}

/// What of the shape selects `route`'s pipelines: `linear_step_rows`' column groups, the
/// tiled kernels' output tile and column groups; the portable kernels' tile; nothing for the
/// fused step, whose pipeline serves every shape.
fn configuration(ctx: &GpuContext, route: Route, d: usize, o: usize) -> Option<String> {
    match route.path {
        StepPath::Rows => {
            let profile = ctx.usable_profile();
            let groups = profile.rows_step_groups(d, o)?;
            let wg = profile.rows_subgroup_size()?;
            Some(format!("{groups} column groups, workgroups of {wg}"))
        }
        StepPath::Tiled => {
            let (outputs, groups) = partial_tile(o as u32, d.div_ceil(4) as u32);
            Some(format!("{outputs}-output tiles, {groups} column groups"))
        }
        StepPath::Separate => Some(match portable_tile(o as u32) {
            None => "one output per invocation".into(),
            Some(lanes) => format!("tiles of {lanes} output lanes"),
        }),
        StepPath::Fused => None,
    }
}

/// The features and outputs a route check of the configuration that `d` and `o` select runs
/// on: the widest of that configuration, so that every lane of every column group and every
/// output of a tile holds data (a driver that loses some lanes' loads shows only there).
fn check_shape(ctx: &GpuContext, route: Route, d: usize, o: usize) -> (usize, usize) {
    match route.path {
        StepPath::Rows => {
            let profile = ctx.usable_profile();
            match (profile.rows_step_groups(d, o), profile.rows_subgroup_size()) {
                // One padding column in the last vec4.
                (Some(groups), Some(size)) => ((groups * size * 4) as usize - 1, 1),
                _ => (d, o),
            }
        }
        StepPath::Tiled => {
            let (outputs, groups) = partial_tile(o as u32, d.div_ceil(4) as u32);
            // The most features with that many column groups (the last vec4 part-filled),
            // and a full tile of outputs (16: a full tile and one more).
            let features = match groups {
                1 => 2 * WORKGROUP_SIZE * 4 - 5,
                2 => 4 * WORKGROUP_SIZE * 4 - 5,
                _ => 4 * WORKGROUP_SIZE * 4 + 3,
            };
            let outputs = if outputs == 16 { 17 } else { outputs };
            (features as usize, outputs as usize)
        }
        StepPath::Fused => (515, 1),
        // Features over several passes and vec4 groups; the tile's outputs full (and one
        // more past 8 output lanes' 32).
        StepPath::Separate => match portable_tile(o as u32) {
            None => (130, 3),
            Some(lanes) if 4 * lanes >= 32 => (130, 33),
            Some(lanes) => (130, 4 * lanes as usize),
        },
    }
}

/// Runs `route` on a small seeded problem of its configuration (`check_shape`): forward, loss, δ
/// and gradient, then a short two-phase run (SGD with momentum, then Adam, in minibatches,
/// checked at every step) against the CPU reference.
fn check_route(ctx: &Arc<GpuContext>, route: Route, d: usize, o: usize) -> Result<Verdict> {
    let (d, o) = check_shape(ctx, route, d, o);
    let n = (CHECK_FLOATS / d.max(1)).clamp(2, CHECK_ROWS);
    let (data, params) = random_problem(n, d, o, (d * 131 + o) as u64)?;
    let backend = || {
        let mut gpu = GpuBackend::new(ctx.clone());
        gpu.set_step_kernels(match route.path {
            StepPath::Rows => StepKernels::Rows,
            StepPath::Fused => StepKernels::Fused,
            StepPath::Separate => StepKernels::Separate,
            StepPath::Tiled => StepKernels::Tiled,
        });
        gpu.set_x_source(Some(if route.x_texture {
            XSource::Texture
        } else {
            XSource::Buffer
        }));
        gpu
    };
    let mut out: Vec<Comparison> = Vec::new();
    let mut gpu = backend();
    gpu.load(&data, &params)?;
    compare_kernels(&mut gpu, &data, &params, &format!("n={n}"), &mut out)?;
    let batching = Batching::MiniBatch {
        size: n.div_ceil(2),
        seed: 1,
    };
    let phase = |name: &str, optimizer| Phase {
        name: name.into(),
        optimizer,
        // Every parameter: the pipelines a subset's steps take are the same shader with
        // groups left out, and compiling them (seconds on lavapipe) is the run's to pay.
        params: ParamSubset::All,
        rows: None,
        batching: batching.clone(),
        stop: StopRule::steps(4, 1),
        patience: None,
    };
    let sgd = SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.1)
    };
    // eps well above the gradients' rounding: Adam's normalised step turns a last-bit
    // difference in a near-zero gradient into a full step of either sign.
    let adam = AdamConfig {
        eps: 0.1,
        ..AdamConfig::new(0.05)
    };
    let phases = [
        phase("local", Optimizer::Sgd(sgd)),
        phase("global", Optimizer::Adam(adam)),
    ];
    let init = data::linear_init(d, o, 3);
    let what = ("two-phase run", route.path.name());
    compare_runs(&mut backend(), &data, &init, &phases, what, &mut out)?;
    Ok(match out.iter().find(|c| !c.pass) {
        None => Verdict {
            pass: true,
            detail: format!(
                "{} comparisons with the CPU reference within tolerance",
                out.len()
            ),
            sizes: None,
        },
        Some(c) => Verdict {
            pass: false,
            detail: format!(
                "{}: max |Δ| {:.3e}, max rel {:.3e} (atol {:.1e}, rtol {:.1e})",
                c.what.split_whitespace().collect::<Vec<_>>().join(" "),
                c.max_abs,
                c.max_rel,
                c.atol,
                c.rtol
            ),
            sizes: None,
        },
    })
}
