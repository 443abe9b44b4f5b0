//! Adapter and device selection, and turning wgpu's asynchronous errors into [`Error`]s.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::StepKernels;
use super::kernels::{Kernels, X_TEXTURE_FORMAT};
use super::plan::{Profile, Request, Route, StepPath, explain, plan_load};
use super::shaders::PORTABLE_STORAGE_BINDINGS;
use super::verify::{Verdict, Verifier};
use crate::{Error, Result};

/// One adapter, device and queue with every pipeline compiled: build once, share with `Arc`.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) kernels: Kernels,
    pub(crate) limits: wgpu::Limits,
    /// A 1×1 texture bound where X's texture would be when a run reads X from buffers (the
    /// kernels that can read either bind both).
    pub(crate) x_stand_in: wgpu::TextureView,
    /// `x_stand_in` for a texture the kernel would write (the tiled forward pass's δ): a
    /// texture one dispatch reads may not also be written in it.
    pub(crate) write_stand_in: wgpu::TextureView,
    info: wgpu::AdapterInfo,
    profile: Profile,
    verifier: Verifier,
    errors: Arc<Mutex<Vec<String>>>,
    lost: Arc<Mutex<Option<String>>>,
    /// How long a wait for the device may take before it counts as hung, in milliseconds.
    timeout_ms: AtomicU64,
}

/// The default for [`GpuContext::set_timeout`]: far beyond any one submission bilevel makes.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.describe())
            .finish_non_exhaustive()
    }
}

impl GpuContext {
    /// Picks an adapter by wgpu's conventions (`WGPU_BACKEND`, `WGPU_ADAPTER_NAME`,
    /// `WGPU_POWER_PREF`), opens a device with the adapter's own limits and builds the kernels.
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    async fn new_async() -> Result<Self> {
        let instance = instance();
        let adapter = choose_adapter(&instance).await?;
        Self::on_adapter(adapter).await
    }

    /// As [`GpuContext::new`], on the first adapter whose name contains `name` (ignoring
    /// case); an error lists the adapters there are.
    pub fn with_adapter_name(name: &str) -> Result<Self> {
        pollster::block_on(async {
            let instance = instance();
            match adapter_named(&instance, name).await {
                Some(adapter) => Self::on_adapter(adapter).await,
                None => {
                    let all = instance
                        .enumerate_adapters(wgpu::Backends::PRIMARY.with_env())
                        .await;
                    let names: Vec<String> = all.iter().map(|a| a.get_info().name).collect();
                    Err(Error::Config(format!(
                        "no adapter's name contains '{name}'; the adapters: {}",
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    )))
                }
            }
        })
    }

    async fn on_adapter(adapter: wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        // The adapter's real limits: wgpu's defaults would cap a storage binding at 128 MiB
        // and the workgroup grid below what the hardware offers. As a browser, WebGPU's.
        let as_browser = as_browser();
        let limits = if as_browser {
            log::warn!(
                "{AS_BROWSER_VAR}: WebGPU's default limits and no subgroups, as a browser gives them"
            );
            wgpu::Limits::default()
        } else {
            adapter.limits()
        };
        if limits.max_storage_buffers_per_shader_stage < PORTABLE_STORAGE_BINDINGS {
            return Err(Error::RequestDevice {
                adapter: info.name.clone(),
                message: format!(
                    "the adapter binds {} storage buffers per shader stage; bilevel's kernels need {}",
                    limits.max_storage_buffers_per_shader_stage, PORTABLE_STORAGE_BINDINGS
                ),
            });
        }
        log::info!(
            "adapter: {} ({:?}, {:?}, {} {}); max storage binding {} MiB",
            info.name,
            info.backend,
            info.device_type,
            info.driver,
            info.driver_info,
            limits.max_storage_buffer_binding_size >> 20
        );
        let profile = profile(&adapter, &limits, as_browser);
        let subgroup_size = profile.rows_subgroup_size();
        // Built (lazily) wherever the lane probe may yet find subgroups wide enough.
        let tiled_kernels = profile.may_take_tiled_kernels();
        let mut required_features = wgpu::Features::empty();
        if subgroup_size.is_some() || tiled_kernels {
            required_features |= wgpu::Features::SUBGROUP;
        }
        // `bilevel bench` times GPUs by their own clocks where they have them.
        required_features |= adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("bilevel"),
                required_features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;

        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&errors);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(e.to_string());
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            *lost_sink.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(format!("{reason:?}: {message}"));
        });

        let kernels = Kernels::new(&device, &limits, subgroup_size, tiled_kernels);
        let stand_in = |label: &str| {
            device
                .create_texture(&wgpu::TextureDescriptor {
                    label: Some(label),
                    size: wgpu::Extent3d {
                        width: 1,
                        height: 1,
                        depth_or_array_layers: 1,
                    },
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D2,
                    format: X_TEXTURE_FORMAT,
                    usage: wgpu::TextureUsages::STORAGE_BINDING,
                    view_formats: &[],
                })
                .create_view(&wgpu::TextureViewDescriptor {
                    label: Some(label),
                    ..Default::default()
                })
        };
        let x_stand_in = stand_in("x texture stand-in");
        let write_stand_in = stand_in("written texture stand-in");
        let context = Self {
            device,
            queue,
            kernels,
            limits,
            x_stand_in,
            write_stand_in,
            verifier: Verifier::new(&identity(&info)),
            info,
            profile,
            errors,
            lost,
            timeout_ms: AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64),
        };
        context.check("building the compute pipelines")?;
        Ok(context)
    }

    /// Adapter name, backend, device type and driver.
    pub fn describe(&self) -> String {
        let i = &self.info;
        format!(
            "{} ({:?}, {:?}, {} {})",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        )
    }

    /// Whether the adapter is a CPU implementation (lavapipe, SwiftShader, WARP).
    pub fn is_cpu(&self) -> bool {
        self.profile.cpu
    }

    /// What the plan knows of this adapter, as it reports itself.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// [`GpuContext::profile`] as verification found it (with verification on): without
    /// subgroups where the lane probe found them other than the kernels assume, with the
    /// smallest subgroup it saw in workgroups of 64.
    pub fn usable_profile(&self) -> Profile {
        let verify = self.verifier.enabled();
        let works = !verify
            || super::verify::subgroups_work(self).unwrap_or_else(|e| {
                log::warn!("the lane probe could not run ({e}): no subgroup paths");
                false
            });
        let subgroups = self.profile.subgroups && works;
        Profile {
            subgroups,
            observed_min_subgroup: (verify && subgroups)
                .then(|| super::verify::observed_min_subgroup(self))
                .flatten(),
            ..self.profile.clone()
        }
    }

    pub(crate) fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Whether runs whose kernels or X's source are left to the plan verify a route against
    /// the CPU reference before they take it (default: yes; `--no-verify` turns it off, for
    /// benchmarks).
    pub fn set_verify(&self, on: bool) {
        self.verifier.set_enabled(on);
    }

    /// Whether `route` computes problems of `d` features and `o` outputs as the CPU reference
    /// does here (the subgroup probe first, for the subgroup paths): the verdict a run whose
    /// plan chose that route would act on, from the cache or checked now.
    pub fn verify(self: &Arc<Self>, route: Route, d: usize, o: usize) -> Result<bool> {
        let subgroups = matches!(route.path, StepPath::Rows | StepPath::Tiled);
        if subgroups && !super::verify::subgroups_work(self)? {
            return Ok(false);
        }
        super::verify::route_works(self, route, d, o)
    }

    /// Every verification verdict known for this adapter, driver and build, from the cache
    /// and this process, by what was checked.
    pub fn verdicts(&self) -> BTreeMap<String, Verdict> {
        self.verifier.verdicts()
    }

    /// Whether `train_steps` (many steps per dispatch) was built: the adapter binds enough
    /// storage buffers per shader stage.
    pub fn has_train_steps(&self) -> bool {
        self.kernels.steps.is_some()
    }

    /// Whether the fused step (`linear_step`) was built: the adapter binds its storage
    /// buffers.
    pub fn has_fused_step(&self) -> bool {
        self.kernels.step.is_some()
    }

    /// Whether `linear_step_rows` takes `d` features and `o` outputs here: one output, and
    /// rows that fit its column groups at this adapter's subgroup size.
    pub fn rows_step_takes(&self, d: usize, o: usize) -> bool {
        self.usable_profile().rows_step_groups(d, o).is_some()
    }

    /// Whether `linear_step_rows` can run here: subgroups of one fixed size (that the lane
    /// probe found as assumed, with verification on).
    pub fn has_rows_step(&self) -> bool {
        self.usable_profile().rows_subgroup_size().is_some()
    }

    /// Whether the tiled kernels (`StepKernels::Tiled`, the register-tile GEMM probe) can run
    /// here: subgroups of at least 8 invocations (likewise).
    pub fn has_tiled_kernels(&self) -> bool {
        self.usable_profile().tiled_kernels()
    }

    /// The adapter's name.
    pub fn adapter_name(&self) -> &str {
        &self.info.name
    }

    /// The largest storage buffer one binding can cover on this device.
    pub fn max_binding_bytes(&self) -> u64 {
        self.profile.max_binding
    }

    /// The most workgroups one dispatch dimension may have on this device.
    pub fn max_workgroups_per_dimension(&self) -> u32 {
        self.limits.max_compute_workgroups_per_dimension
    }

    /// Fails with the first error wgpu reported since the last check, or a lost device.
    pub(crate) fn check(&self, context: &str) -> Result<()> {
        if let Some(message) = self
            .lost
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Err(Error::DeviceLost {
                adapter: self.info.name.clone(),
                message,
            });
        }
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        if errors.is_empty() {
            return Ok(());
        }
        let message = errors.join("; ");
        errors.clear();
        Err(Error::Gpu {
            adapter: self.info.name.clone(),
            context: context.into(),
            message,
        })
    }

    /// How long a wait for the device may take before it is reported as hung (default 600 s).
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms
            .store(timeout.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// Waits for all submitted work, then [`GpuContext::check`]s; a wait past the timeout is
    /// [`Error::DeviceHung`].
    pub(crate) fn wait(&self, context: &str) -> Result<()> {
        let timeout = Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed));
        let poll = wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(timeout),
        };
        match self.device.poll(poll) {
            Ok(_) => {}
            Err(wgpu::PollError::Timeout) => {
                return Err(Error::DeviceHung {
                    adapter: self.info.name.clone(),
                    context: context.into(),
                    seconds: timeout.as_secs_f64(),
                });
            }
            Err(e) => {
                return Err(Error::Gpu {
                    adapter: self.info.name.clone(),
                    context: context.into(),
                    message: e.to_string(),
                });
            }
        }
        self.check(context)
    }

    /// Compiles `source` as a compute pipeline (entry `main`, auto layout) and reports what
    /// wgpu says of it as [`Error::Gpu`]: a hook to prove that shader and pipeline errors
    /// surface as typed errors rather than panics.
    #[doc(hidden)]
    pub fn compile_compute(&self, label: &str, source: &str) -> Result<()> {
        let _pipeline = self.auto_pipeline(label, source, &[]);
        self.check(&format!("building pipeline '{label}'"))
    }

    /// `source`'s entry `main` as a compute pipeline with the overrides `constants` and the
    /// layout wgpu derives from the shader: for the one-off kernels that build their own
    /// bind groups (the probes), not the training kernels' shared layouts.
    pub(crate) fn auto_pipeline(
        &self,
        label: &str,
        source: &str,
        constants: &[(&str, f64)],
    ) -> wgpu::ComputePipeline {
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(std::borrow::Cow::Borrowed(source)),
            });
        self.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    ..Default::default()
                },
                cache: None,
            })
    }
}

/// A wgpu instance on Vulkan, Metal and DX12 unless `WGPU_BACKEND` says otherwise: compute on
/// GL is poor, and probing it loads EGL drivers that log errors on headless machines.
fn instance() -> wgpu::Instance {
    let descriptor = wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    };
    wgpu::Instance::new(descriptor.with_env())
}

/// The adapter wgpu's conventions pick: the first whose name contains `WGPU_ADAPTER_NAME`, else
/// the one `request_adapter` prefers under `WGPU_POWER_PREF`.
/// The first adapter whose name contains `name`, ignoring case.
async fn adapter_named(instance: &wgpu::Instance, name: &str) -> Option<wgpu::Adapter> {
    let wanted = name.to_lowercase();
    instance
        .enumerate_adapters(wgpu::Backends::PRIMARY.with_env())
        .await
        .into_iter()
        .find(|a| a.get_info().name.to_lowercase().contains(&wanted))
}

async fn choose_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    match std::env::var("WGPU_ADAPTER_NAME") {
        Ok(wanted) => adapter_named(instance, &wanted)
            .await
            .ok_or_else(|| Error::NoAdapter {
                detail: format!(" matching WGPU_ADAPTER_NAME={wanted}"),
            }),
        Err(_) => instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::from_env().unwrap_or_default(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter {
                detail: format!(" ({e})"),
            }),
    }
}

/// Widens the subgroup sizes the adapter reports to `MIN,MAX` (both powers of two, MIN at
/// most and MAX at least the adapter's): a fixed-size adapter then plans as one whose
/// pipelines may get any size in between, as AMD RDNA, Intel and Apple report. For testing
/// that the kernels hold there; a range narrower than the adapter's is ignored.
pub const SUBGROUP_SIZES_VAR: &str = "BILEVEL_SUBGROUP_SIZES";

/// The subgroup sizes the plan takes: the adapter's, or [`SUBGROUP_SIZES_VAR`]'s wider range.
fn subgroup_sizes(info: &wgpu::AdapterInfo) -> (u32, u32) {
    let reported = (info.subgroup_min_size, info.subgroup_max_size);
    let Ok(value) = std::env::var(SUBGROUP_SIZES_VAR) else {
        return reported;
    };
    let parsed = value
        .split_once(',')
        .and_then(|(a, b)| Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?)));
    match parsed {
        Some((min, max))
            if min.is_power_of_two()
                && max.is_power_of_two()
                && min <= reported.0
                && max >= reported.1 =>
        {
            log::warn!(
                "{SUBGROUP_SIZES_VAR}: planning as if subgroups were {min}–{max} lanes (the adapter reports {}–{})",
                reported.0,
                reported.1
            );
            (min, max)
        }
        _ => {
            log::warn!(
                "{SUBGROUP_SIZES_VAR}={value} ignored: not MIN,MAX powers of two around the adapter's {}–{}",
                reported.0,
                reported.1
            );
            reported
        }
    }
}

/// Opens the device as a browser's WebGPU gives one to a page that asks for no limits and no
/// subgroups: WebGPU's default limits (8 storage buffers per shader stage, 128 MiB bindings,
/// 16 KiB of workgroup memory), only timestamps (which browsers offer) among the optional
/// features. For testing the portable path on any adapter.
pub const AS_BROWSER_VAR: &str = "BILEVEL_AS_BROWSER";

/// Whether [`AS_BROWSER_VAR`] is set (to anything but `0` or nothing).
fn as_browser() -> bool {
    std::env::var(AS_BROWSER_VAR).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// What the plan needs to know of `adapter` opened with `limits` (`as_browser`: without
/// optional features).
fn profile(adapter: &wgpu::Adapter, limits: &wgpu::Limits, as_browser: bool) -> Profile {
    let info = adapter.get_info();
    Profile {
        driver: format!("{} | {} {}", info.name, info.driver, info.driver_info),
        cpu: info.device_type == wgpu::DeviceType::Cpu,
        subgroups: !as_browser && adapter.features().contains(wgpu::Features::SUBGROUP),
        subgroup_sizes: subgroup_sizes(&info),
        max_binding: limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size),
        max_texture_dimension_2d: limits.max_texture_dimension_2d,
        storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
        observed_min_subgroup: None,
    }
}

/// The adapter, backend, ids and driver: what a verification verdict holds for.
fn identity(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} | {:?} | {:#x}:{:#x} | {} {}",
        info.name, info.backend, info.vendor, info.device, info.driver, info.driver_info
    )
}

/// Typical shapes `bilevel devices` shows the plan for: (what, (n, d, o)).
const TYPICAL_SHAPES: [(&str, (usize, usize, usize)); 4] = [
    ("569 × 30, one output (breast cancer)", (569, 30, 1)),
    ("65,536 × 1,024, one output (S2)", (65_536, 1_024, 1)),
    ("1,797 × 64, ten outputs (digits)", (1_797, 64, 10)),
    ("16,384 × 1,024, 64 outputs (S3)", (16_384, 1_024, 64)),
];

/// The plan for one shape, as `bilevel devices` shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PlanReport {
    /// The shape.
    pub shape: String,
    /// The route: step path and X's source.
    pub route: String,
    /// Why, and the layout.
    pub why: String,
}

/// What `bilevel devices` shows of one adapter.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AdapterReport {
    /// Adapter name.
    pub name: String,
    /// Vulkan, Metal, Dx12, Gl.
    pub backend: String,
    /// Discrete, integrated, virtual, CPU.
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// Largest storage buffer binding, bytes.
    pub max_storage_binding: u64,
    /// Largest buffer, bytes.
    pub max_buffer: u64,
    /// Workgroup shared memory, bytes.
    pub max_workgroup_storage: u32,
    /// Invocations per workgroup.
    pub max_invocations_per_workgroup: u32,
    /// Workgroups per dispatch dimension.
    pub max_workgroups_per_dimension: u32,
    /// GPU timestamp queries.
    pub timestamps: bool,
    /// f16 in shaders.
    pub shader_f16: bool,
    /// Subgroup operations.
    pub subgroups: bool,
    /// Subgroup sizes the adapter may use, (smallest, largest), as it reports them.
    pub subgroup_sizes: (u32, u32),
    /// The workgroup size of the one-output rows step, where the adapter has it: its
    /// smallest subgroup size.
    pub rows_workgroup: Option<u32>,
    /// Whether bilevel would choose it.
    pub chosen: bool,
    /// The plan for a few typical shapes (before verification).
    pub plans: Vec<PlanReport>,
    /// What verification dropped on this adapter for this driver and build, from the cache:
    /// (what, the failing comparison).
    pub dropped: Vec<(String, String)>,
}

/// Every adapter wgpu sees on the enabled backends, marking the one bilevel would choose.
pub fn adapters() -> Vec<AdapterReport> {
    pollster::block_on(async {
        let instance = instance();
        let chosen = choose_adapter(&instance).await.ok().map(|a| a.get_info());
        let all = instance
            .enumerate_adapters(wgpu::Backends::PRIMARY.with_env())
            .await;
        all.into_iter()
            .map(|a| {
                let as_browser = as_browser();
                let (info, features) = (a.get_info(), a.features());
                let limits = if as_browser {
                    wgpu::Limits::default()
                } else {
                    a.limits()
                };
                let profile = profile(&a, &limits, as_browser);
                let plans = TYPICAL_SHAPES
                    .iter()
                    .map(|&(shape, (n, d, o))| {
                        let request = Request {
                            kernels: StepKernels::Auto,
                            x_source: None,
                            chunk_rows: usize::MAX,
                        };
                        let (route, why) = match plan_load(&profile, (n, d, o), request, &[]) {
                            Ok(plan) => {
                                (plan.route.to_string(), explain(&profile, &plan, (n, d, o)))
                            }
                            Err(e) => ("none".into(), e.to_string()),
                        };
                        PlanReport {
                            shape: shape.into(),
                            route,
                            why,
                        }
                    })
                    .collect();
                let dropped = Verifier::new(&identity(&info))
                    .verdicts()
                    .into_iter()
                    .filter(|(_, v)| !v.pass)
                    .map(|(what, v)| (what, v.detail))
                    .collect();
                AdapterReport {
                    plans,
                    dropped,
                    chosen: chosen.as_ref().is_some_and(|c| {
                        c.name == info.name && c.backend == info.backend && c.device == info.device
                    }),
                    name: info.name,
                    backend: format!("{:?}", info.backend),
                    device_type: format!("{:?}", info.device_type),
                    driver: format!("{} {}", info.driver, info.driver_info)
                        .trim()
                        .to_string(),
                    max_storage_binding: limits.max_storage_buffer_binding_size,
                    max_buffer: limits.max_buffer_size,
                    max_workgroup_storage: limits.max_compute_workgroup_storage_size,
                    max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
                    max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
                    timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
                    shader_f16: features.contains(wgpu::Features::SHADER_F16),
                    subgroups: profile.subgroups,
                    subgroup_sizes: (info.subgroup_min_size, info.subgroup_max_size),
                    rows_workgroup: profile.rows_subgroup_size(),
                }
            })
            .collect()
    })
}
