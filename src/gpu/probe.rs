//! The lane probe behind verification: `shaders/probe_lanes.wgsl` (what the subgroup kernels
//! assume of subgroups), dispatched once per workgroup size and checked word by word on the
//! host by a pure function, tested without a GPU.

use super::context::GpuContext;
use super::shaders::shader_source;
use crate::{Error, Result};

/// Words `probe_lanes.wgsl` writes per invocation (its `LANE_WORDS`).
const LANE_WORDS: usize = 7;
/// Workgroups of each probe dispatch: more than one, so a workgroup's base is tested too.
const PROBE_WORKGROUPS: u32 = 4;

/// Runs the lane probe in workgroups of `wg` invocations and checks what it wrote against
/// subgroups of `sizes` (smallest, largest): `Ok(Ok(seen))` with the smallest and largest
/// size it saw; `Ok(Err(why))`: the adapter's subgroups are not what the kernels assume.
pub(crate) fn lanes(
    ctx: &GpuContext,
    wg: u32,
    sizes: (u32, u32),
) -> Result<std::result::Result<(u32, u32), String>> {
    let invocations = (wg * PROBE_WORKGROUPS) as usize;
    let words = run(
        ctx,
        "probe_lanes.wgsl",
        wg,
        (invocations * LANE_WORDS * 4) as u64,
    )?;
    let words: &[u32] = bytemuck::cast_slice(&words);
    Ok(check_lanes(words, wg, sizes).map(|()| seen_sizes(words)))
}

/// The smallest and largest subgroup size `probe_lanes.wgsl`'s words report.
pub(crate) fn seen_sizes(words: &[u32]) -> (u32, u32) {
    let sizes = words.chunks_exact(LANE_WORDS).map(|w| w[0]);
    let min = sizes.clone().min().unwrap_or(0);
    (min, sizes.max().unwrap_or(0))
}

/// Dispatches `file` (entry `main`, override `WG` = `wg`) over `PROBE_WORKGROUPS`
/// workgroups, its output at binding 0 (`bytes`), and reads the output back.
fn run(ctx: &GpuContext, file: &'static str, wg: u32, bytes: u64) -> Result<Vec<u8>> {
    let probe = OutputProbe::new(ctx, file, &[("WG", f64::from(wg))], bytes);
    probe.submit(ctx, PROBE_WORKGROUPS);
    read_back(ctx, &probe.out, bytes, file)
}

/// A probe whose only binding is its output (binding 0): the pipeline of `file`'s `main`
/// with `constants`, its output buffer and their bind group, built once.
pub(super) struct OutputProbe {
    file: &'static str,
    pipeline: wgpu::ComputePipeline,
    pub(super) out: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
}

impl OutputProbe {
    pub(super) fn new(
        ctx: &GpuContext,
        file: &'static str,
        constants: &[(&str, f64)],
        bytes: u64,
    ) -> Self {
        let pipeline = ctx.auto_pipeline(file, shader_source(file), constants);
        let out = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("probe output"),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(file),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: out.as_entire_binding(),
            }],
        });
        Self {
            file,
            pipeline,
            out,
            bind_group,
        }
    }

    /// Submits one dispatch of `groups` workgroups, without waiting.
    pub(super) fn submit(&self, ctx: &GpuContext, groups: u32) {
        let label = Some(self.file);
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label,
                timestamp_writes: None,
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &self.bind_group, &[]);
            pass.dispatch_workgroups(groups, 1, 1);
        }
        ctx.queue.submit([encoder.finish()]);
    }
}

/// Waits for the work submitted so far and reads the first `bytes` of `src` (a buffer with
/// `COPY_SRC`), the output of probe `file`.
pub(super) fn read_back(
    ctx: &GpuContext,
    src: &wgpu::Buffer,
    bytes: u64,
    file: &str,
) -> Result<Vec<u8>> {
    let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("probe staging"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("probe read-back"),
        });
    encoder.copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
    ctx.queue.submit([encoder.finish()]);
    let slice = staging.slice(..);
    slice.map_async(wgpu::MapMode::Read, |_| {});
    ctx.wait(&format!("running {file}"))?;
    let view = slice.get_mapped_range().map_err(|e| Error::Gpu {
        adapter: ctx.adapter_name().into(),
        context: format!("reading {file}'s output"),
        message: e.to_string(),
    })?;
    Ok(view.to_vec())
}

/// What `probe_lanes.wgsl` must write for local invocation `lid` of a workgroup of `wg` in
/// subgroups of `size` consecutive invocations (its CPU twin); subgroups wider than the
/// workgroup hold it whole, its `wg` lanes.
fn expected(lid: u32, size: u32, wg: u32) -> [u32; LANE_WORDS] {
    let n = size.min(wg);
    let first = lid - lid % n;
    [
        size,
        lid % n,
        (first + 1..=first + n).sum(),
        first + (lid % n + 1) % n,
        lid ^ 1,
        first + 3,
        first + 7,
    ]
}

/// Checks `probe_lanes.wgsl`'s words for workgroups of `wg`: every subgroup size within
/// `sizes` and dividing the workgroup (or wider than it: the workgroup is one subgroup),
/// lanes = lid mod size, and the sum, shuffles and broadcasts over exactly those lanes. The
/// first wrong word is named.
pub(crate) fn check_lanes(
    words: &[u32],
    wg: u32,
    (min, max): (u32, u32),
) -> std::result::Result<(), String> {
    for (i, w) in words.chunks_exact(LANE_WORDS).enumerate() {
        let lid = i as u32 % wg;
        let size = w[0];
        if size < min.max(1) || size > max || (size < wg && !wg.is_multiple_of(size)) {
            return Err(format!(
                "invocation {i} reports subgroups of {size} lanes; the adapter reports {min}–{max} and the workgroup has {wg}"
            ));
        }
        let want = expected(lid, size, wg);
        // Broadcasts from lanes that exist only: 3 needs 4 lanes, 7 needs 8.
        let checked = match size.min(wg) {
            ..4 => 5,
            4..8 => 6,
            _ => 7,
        };
        let names = [
            "subgroup_size",
            "subgroup_invocation_id",
            "subgroupAdd",
            "subgroupShuffle",
            "subgroupShuffleXor",
            "subgroupBroadcast from lane 3",
            "subgroupBroadcast from lane 7",
        ];
        if let Some(k) = (0..checked).find(|&k| w[k] != want[k]) {
            return Err(format!(
                "{} at invocation {i} (lane {} of {size}, workgroups of {wg}): {}, not {}",
                names[k],
                lid % size.min(wg),
                w[k],
                want[k]
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a correct adapter with subgroups of `size` writes for workgroups of `wg`.
    fn correct(wg: u32, size: u32) -> Vec<u32> {
        (0..wg * PROBE_WORKGROUPS)
            .flat_map(|i| {
                let mut words = expected(i % wg, size, wg);
                if size.min(wg) < 8 {
                    words[6] = 12345; // a broadcast from a lane that does not exist
                }
                words
            })
            .collect()
    }

    #[test]
    fn correct_lanes_pass_at_every_size_wgsl_allows() {
        for size in [4, 8, 16, 32, 64] {
            assert_eq!(check_lanes(&correct(64, size), 64, (size, size)), Ok(()));
            assert_eq!(check_lanes(&correct(size, size), size, (4, 64)), Ok(()));
        }
        assert_eq!(check_lanes(&correct(128, 128), 128, (128, 128)), Ok(()));
        assert_eq!(seen_sizes(&correct(64, 16)), (16, 16));
        // Subgroups of 32 in one workgroup and 8 in the others.
        let mut mixed = correct(64, 8);
        mixed[..64 * LANE_WORDS].copy_from_slice(&correct(64, 32)[..64 * LANE_WORDS]);
        assert_eq!(seen_sizes(&mixed), (8, 32));
    }

    /// A varying-size adapter running a workgroup smaller than its subgroups (the rows step at
    /// its smallest size): one partial subgroup, lane = lid, sums over the workgroup only.
    #[test]
    fn a_workgroup_inside_a_wider_subgroup_passes_and_is_checked() {
        for (wg, size) in [(4, 8), (8, 32), (32, 64)] {
            let words = correct(wg, size);
            assert_eq!(
                check_lanes(&words, wg, (wg, size)),
                Ok(()),
                "{wg} in {size}"
            );
            // Lanes that do not exist in the workgroup must not be summed.
            let mut wrong = words.clone();
            wrong[2] = (1..=size).sum();
            let err = check_lanes(&wrong, wg, (wg, size)).unwrap_err();
            assert!(err.starts_with("subgroupAdd at invocation 0"), "{err}");
        }
        // A size that neither divides the workgroup nor holds it whole.
        let err = check_lanes(&correct(64, 48), 64, (32, 64)).unwrap_err();
        assert!(err.contains("subgroups of 48 lanes"), "{err}");
    }

    /// Mesa 22.3's lavapipe at 1,024-bit vectors: 32 lanes reported, sums within halves of 16.
    #[test]
    fn sums_over_half_a_subgroup_are_caught() {
        let mut words = correct(32, 32);
        for (i, w) in words.chunks_exact_mut(LANE_WORDS).enumerate() {
            let half = (i as u32 % 32) / 16 * 16;
            w[2] = (half + 1..=half + 16).sum();
        }
        let err = check_lanes(&words, 32, (32, 32)).unwrap_err();
        assert!(err.starts_with("subgroupAdd at invocation 0"), "{err}");
    }

    #[test]
    fn a_size_outside_the_reported_range_or_lanes_out_of_order_are_caught() {
        let err = check_lanes(&correct(64, 16), 64, (32, 32)).unwrap_err();
        assert!(err.contains("subgroups of 16 lanes"), "{err}");
        let mut words = correct(64, 8);
        words.swap(LANE_WORDS + 1, 2 * LANE_WORDS + 1);
        let err = check_lanes(&words, 64, (8, 8)).unwrap_err();
        assert!(
            err.starts_with("subgroup_invocation_id at invocation 1"),
            "{err}"
        );
    }
}
