// Lane probe: what the subgroup kernels assume of the adapter's subgroups, written out word by
// word so that the host (`gpu/probe.rs`, its CPU twin) can compare each with what it must be
// before a run takes a path that relies on them. Not part of training.
//
// Bindings (group 0):
//   0 out  storage, rw  u32[LANE_WORDS per invocation]: subgroup_size, subgroup_invocation_id,
//                       subgroupAdd(lid + 1), subgroupShuffle(lid, (lane + 1) mod n),
//                       subgroupShuffleXor(lid, 1), subgroupBroadcast(lid, 3),
//                       subgroupBroadcast(lid, 7) (meaningful at 8 lanes and more), where n =
//                       min(size, WG) is the lanes a subgroup of this workgroup has
//
// Invariants: the host dispatches whole workgroups of WG invocations and expects subgroups to
// be runs of `size` consecutive local invocation indices with lane = lid mod size, or, where
// the pipeline's subgroups are wider than the workgroup, the workgroup to be one subgroup with
// lane = lid: what `linear_step_rows` (a workgroup within one subgroup) and `linear_tiled`
// (lanes by subgroup_invocation_id, broadcasts from lanes 0–7) rely on. Every lane takes part
// in every operation: no divergence.

override WG: u32 = 64u;

const LANE_WORDS: u32 = 7u;

@group(0) @binding(0) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) size: u32,
) {
    let base = LANE_WORDS * (group.x * WG + lid);
    out[base] = size;
    out[base + 1u] = lane;
    out[base + 2u] = subgroupAdd(lid + 1u);
    out[base + 3u] = subgroupShuffle(lid, (lane + 1u) % min(size, WG));
    out[base + 4u] = subgroupShuffleXor(lid, 1u);
    out[base + 5u] = subgroupBroadcast(lid, 3u);
    out[base + 6u] = subgroupBroadcast(lid, 7u);
}
