// Bandwidth probe: reads every element of one chunk of X exactly once and sums it, so its time
// is the practical floor for any kernel that must read X (the roofline the training step is
// measured against). Not part of training.
//
// Bindings (group 0):
//   0 job     uniform          ProbeJob: len4 = number of vec4 in the chunk, run = vec4 words
//                              one invocation reads contiguously
//   1 x       storage, read    vec4<f32>[len4]
//   2 out     storage, rw      f32[workgroups]: one partial sum per workgroup (keeps the reads live)
//   3 x_texture storage texture, read  `main_texture`'s X: the same words as rgba32float
//                              texels, 2^shift to a texel row (a 1×1 stand-in for `main`)
//
// Invariants: invocation i of G·WG reads the runs starting at vec4 (i + k·G·WG)·run, k = 0, 1, …;
// the chunk's length is a multiple of 4 floats (the host pads); `main_texture`: run divides
// 2^shift, so no run crosses a texel row. The host picks run: 1 on GPUs
// (consecutive invocations read consecutive 16-byte words, coalesced), 1,024 on CPU adapters,
// where each invocation's loads are separate scalar loads and long per-invocation streams are
// what the hardware prefetchers follow (docs/kernel-notes.md).
// Unlike the training kernels, the probe takes its length as a uniform: lavapipe specialises
// the shader on it at each dispatch, and the specialised loop is faster than that costs, so
// the roofline stays the fastest read of X we know. Where the training steps read X through a
// texture (CPU adapters, see loads.wgsl's X_TEXTURE), `main_texture` is that roofline
// (docs/kernel-notes.md).

override WG: u32 = 64u;

struct ProbeJob {
    len4: u32,
    run: u32,
    // log2 of the texture's width in texels (`main_texture`).
    shift: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> job: ProbeJob;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var x_texture: texture_storage_2d<rgba32float, read>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let stride = groups.x * WG * job.run;
    var acc = vec4<f32>(0.0);
    for (var start = (wg.x * WG + lid) * job.run; start < job.len4; start += stride) {
        let end = min(start + job.run, job.len4);
        for (var i = start; i < end; i++) {
            acc += x[i];
        }
    }
    keep(acc, wg.x);
}

// `main` over the texture: the same words, runs and sums.
@compute @workgroup_size(WG)
fn main_texture(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let stride = groups.x * WG * job.run;
    let mask = (1u << job.shift) - 1u;
    var acc = vec4<f32>(0.0);
    for (var start = (wg.x * WG + lid) * job.run; start < job.len4; start += stride) {
        let y = start >> job.shift;
        let first = start & mask;
        let end = first + min(job.run, job.len4 - start);
        var i = first;
        for (; i + 3u < end; i += 4u) {
            let ab = textureLoad(x_texture, vec2(i, y)) + textureLoad(x_texture, vec2(i + 1u, y));
            let cd = textureLoad(x_texture, vec2(i + 2u, y)) + textureLoad(x_texture, vec2(i + 3u, y));
            acc += ab + cd;
        }
        for (; i < end; i++) {
            acc += textureLoad(x_texture, vec2(i, y));
        }
    }
    keep(acc, wg.x);
}

/// Keeps the sums, and so the loads, live: stores workgroup w's sum only where it is 1e38,
/// never true for real data, so no lane writes.
fn keep(acc: vec4<f32>, w: u32) {
    let s = acc.x + acc.y + acc.z + acc.w;
    if s == 1.0e38 {
        out[w] = s;
    }
}
