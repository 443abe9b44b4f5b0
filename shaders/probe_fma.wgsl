// Arithmetic probe: independent chains of fused multiply-adds held in registers, no memory
// traffic but one store an invocation, so its rate is the adapter's practical f32 peak. `bilevel
// bench --sweep` bounds a lockstep sweep with it: M models need 4·n·d·M flops a full-batch
// step however their reads of X are shared. Not part of training.
//
// Bindings (group 0):
//   0 out  storage, rw  f32[invocations]: invocation i's chains summed (gpu/probe_fma.rs's
//                       CPU twin computes the same, so a driver that cut the loop short shows)
//
// Each invocation i (i = workgroup · WG + local index) runs ITERATIONS iterations of four
// rounds of a_q = fma(a_q, m, c) (`rounds`) for its six vec4 chains a_0 .. a_5 (a_q starts at
// 0.01·(4q, 4q + 1, 4q + 2, 4q + 3)), m = 1 − 10⁻⁴·(i mod 64), c = 10⁻³·(i mod 7): 192 flops
// an iteration. Four rounds an iteration and 24 chains deep, so neither the loop's own
// work nor an FMA's latency bounds the rate (docs/kernel-notes.md).

override WG: u32 = 64u;
override ITERATIONS: u32 = 256u;

@group(0) @binding(0) var<storage, read_write> out: array<f32>;

/// Four rounds of a = fma(a, m, c): the chains of one call depend on each other, those of the
/// six calls of an iteration do not, and the compilers interleave them.
fn rounds(a: vec4<f32>, m: vec4<f32>, c: vec4<f32>) -> vec4<f32> {
    return fma(fma(fma(fma(a, m, c), m, c), m, c), m, c);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = wg.x * WG + lid;
    let m = vec4(1.0 - 1e-4 * f32(i % 64u));
    let c = vec4(1e-3 * f32(i % 7u));
    var a0 = vec4(0.00, 0.01, 0.02, 0.03);
    var a1 = vec4(0.04, 0.05, 0.06, 0.07);
    var a2 = vec4(0.08, 0.09, 0.10, 0.11);
    var a3 = vec4(0.12, 0.13, 0.14, 0.15);
    var a4 = vec4(0.16, 0.17, 0.18, 0.19);
    var a5 = vec4(0.20, 0.21, 0.22, 0.23);
    for (var k = 0u; k < ITERATIONS; k++) {
        a0 = rounds(a0, m, c);
        a1 = rounds(a1, m, c);
        a2 = rounds(a2, m, c);
        a3 = rounds(a3, m, c);
        a4 = rounds(a4, m, c);
        a5 = rounds(a5, m, c);
    }
    let one = vec4(1.0);
    out[i] = dot(a0, one) + dot(a1, one) + dot(a2, one) + dot(a3, one) + dot(a4, one) + dot(a5, one);
}
