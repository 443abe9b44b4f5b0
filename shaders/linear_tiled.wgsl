// Forward pass and gradient partials as small register-tiled GEMMs: each invocation owns 8
// rows × T outputs (forward) or 4·G columns × T outputs (partial), T = TILE_OUTPUTS (4, 8 or
// 16), G = COLUMN_GROUPS (1, 2 or 4), so one vec4 of X feeds T outputs and one weight vector
// eight rows. Same inputs, outputs and partials layout as linear_forward and
// linear_backward.partial (bce and the optimizers' block sums are shared); only the order of
// the additions inside a dot product differs (vec4 by vec4).
//
//   forward: workgroup (row tiles, output tile u), invocation t of its row tiles computes, for
//            p = 8t .. 8t + 7 < count and k = T·u .. T·u + T − 1 < o,
//            z[p·o + k] = Σ_c dot(x[row(p), 4c .. 4c + 3], W[k, 4c ..]) + b[k], and from it δ
//            (and with ROW_OUTPUTS the loss) exactly as bce.wgsl (so the step needs no bce
//            dispatch)
//   partial: workgroup (block, output tile u), invocation lid for column groups
//            c = c0 + m·WG + lid < x_stride / 4 (m < G; c0 = 0, G·WG, …), sums over the
//            block's rows p = block·R .. min(block·R + R, count) in ascending order,
//            W[k, 4c .. 4c + 3]:  δ[p, k] · x[row(p), 4c .. 4c + 3]
//            b[k]:                δ[p, k]              (in the first pass)
//            and writes them to partials[(block_base + block) · S + …] as linear_backward does
//            (four rows per iteration, each sum adding their terms in row order).
//
// What a workgroup shares (its output tile's weights in the forward pass, its rows' δ in the
// partial) is loaded once per subgroup: lane j loads output k + j's weights (with X_TEXTURE
// from the texture `pack_weights` fills), lane l outputs k + 4l .. k + 4l + 3's δ (with
// X_TEXTURE from the texture the forward pass fills), and subgroupBroadcast hands them to
// every lane: one load per lane instead of one per invocation (docs/kernel-notes.md). Loads
// from the arguments are taken out of the loops by hand: llvmpipe does not hoist them.
//
// Bindings (group 0):
//   0 dims      storage, read    Dims: d, o, rows_per_block R, n_params P, x_stride
//   1 chunk     storage, dynamic ChunkStep: count, row_offset, block_base
//   2 x         storage, read    vec4<f32>[chunk_rows * x_stride / 4], rows zero-padded
//   3 rows      storage, read    u32[] chunk-local row indices
//   4 params    storage, read    f32[P]: W row-major, then b                      (forward)
//   5 z         storage, rw      f32[count * o]                       (forward, ROW_OUTPUTS)
//   6 delta     storage, read    f32[count * o]                                   (partial)
//   7 partials  storage, rw      f32[blocks * S]                                  (partial)
//   8 y         storage, read    f32[chunk_rows * o]                              (forward)
//   9 pos_weight storage, read   f32[o], then a lockstep run's model table (bce.wgsl) (forward)
//  10 delta_out storage, rw      f32[count * o], the δ buffer bound at 6
//                                 (forward, with ROW_OUTPUTS or without X_TEXTURE)
//  11 loss      storage, rw      f32[count * o]                       (forward, ROW_OUTPUTS)
//  18 x_texture storage texture, read  X's words again, read with X_TEXTURE (loads.wgsl)
//  19 w_texture storage texture, read  W as `pack_weights` leaves it, read with X_TEXTURE
//                                       (forward)
//  20 w_packed  storage texture, write the same texture                             (pack_weights)
//  21 delta_packed storage texture, write  δ again as texels, with X_TEXTURE: texel p·O4 + q
//                                       (O4 = ⌈o / 4⌉) holds δ[p, 4q .. 4q + 4]  (forward)
//  22 delta_texture storage texture, read  the same texture                      (partial)
//
// Invariants: subgroups have at least 8 invocations (8 lanes hand out the shared values; the
// host builds these kernels only where the adapter's smallest subgroup is that large), and
// every invocation reaches every subgroup operation: none leaves before its last one
// (invocations past the last row or column group repeat it and store nothing). The host
// unrolls the `// #unroll m` blocks 4 times (gpu::tiled_source), and COLUMN_GROUPS ≤ 4.
// x_stride is a multiple of 4 and X's padding columns are zero; an invocation loops
// x_stride / 4 times (forward) or ⌈x_stride / 4 / (G·WG)⌉ · R times (partial), within
// llvmpipe's loop limit for the shapes the host sends here; the grid is 2-D only to pass
// 65,535 workgroups per dimension, so the workgroup index is linearised and guarded. The
// output tile and (partial) the block come from the workgroup id alone, so the loops are
// uniform across every subgroup. With X_TEXTURE, `pack_weights` has run since the parameters
// last changed and before the forward pass (the host dispatches it at the start of each step).

// Dims, ChunkStep, sigmoid and softplus_neg_abs come from common.wgsl, load_x and weights4
// from loads.wgsl, which the host (gpu::SHADERS) puts before this file.

override WG: u32 = 64u;
// Outputs per workgroup: 16 (for more than eight outputs), 8, or 4 (for at most four outputs,
// where the others would only repeat the last); each vec4 of X feeds that many accumulators.
override TILE_OUTPUTS: u32 = 8u;
// Column groups (vec4 of columns) per invocation in the partial, up to the host's unroll
// count (its `// #unroll m` blocks): each δ handed out feeds 4 × that many accumulators, and
// a workgroup passes over δ once per COLUMN_GROUPS · WG column groups. The host takes the
// most that the row's column groups fill.
override COLUMN_GROUPS: u32 = 1u;
// The partial four rows per iteration (see there): the host sets it where the sums do not fit
// the registers (more than 8 vec4 a lane, TILE_OUTPUTS · COLUMN_GROUPS > 8), and elsewhere
// leaves the loop out, which shortens the compile.
override QUAD_ROWS: bool = false;
// The partial's passes over the columns: those from vec4 column COLUMNS_BEGIN (a multiple of
// COLUMN_GROUPS · WG) up to the one holding column COLUMNS_END − 1. A phase that trains a
// feature range (the local phase) sums its passes only, and within a pass the column groups
// that reach the range (`sums_column_group`); the others' partials are not written or are
// zero, and the optimizers, which skip the parameters the phase freezes, never read them. The
// biases' sums are the first pass's (c0 == 0): the host begins there when a bias is trained.
// Every pass by default, and for the checks, which need the whole gradient.
override COLUMNS_BEGIN: u32 = 0u;
override COLUMNS_END: u32 = 0xffffffffu;
// Whether the forward pass writes each output's logit, loss and δ to their buffers: the
// checks, the diagnostics and the partial reading δ from its buffer do; the training steps
// reading δ from its texture need none of them (three scattered stores and the loss's exp and
// log per output).
override ROW_OUTPUTS: bool = true;
// The forward pass two column groups per iteration (see there): the host sets it where a
// lane's sums do not fit the registers (8 rows × TILE_OUTPUTS ≥ 8 outputs), where a driver
// loads and stores every sum once per iteration (docs/kernel-notes.md).
override PAIR_COLUMNS: bool = false;

@group(0) @binding(0) var<storage, read> dims: Dims;
@group(0) @binding(1) var<storage, read> chunk: ChunkStep;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> rows: array<u32>;
@group(0) @binding(4) var<storage, read> params: array<f32>;
@group(0) @binding(5) var<storage, read_write> z: array<f32>;
@group(0) @binding(6) var<storage, read> delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;
@group(0) @binding(8) var<storage, read> y: array<f32>;
@group(0) @binding(9) var<storage, read> pos_weight: array<f32>;
@group(0) @binding(10) var<storage, read_write> delta_out: array<f32>;
@group(0) @binding(11) var<storage, read_write> loss: array<f32>;
@group(0) @binding(19) var w_texture: texture_storage_2d<rgba32float, read>;
@group(0) @binding(20) var w_packed: texture_storage_2d<rgba32float, write>;
@group(0) @binding(21) var delta_packed: texture_storage_2d<rgba32float, write>;
@group(0) @binding(22) var delta_texture: texture_storage_2d<rgba32float, read>;

// W for `forward` with X_TEXTURE: texel k·S + c (S = x_stride / 4, in X's texture layout)
// holds W[k, 4c .. 4c + 4], zero past column d, so that a lane loads four weights of an
// output with one texel load, where a CPU adapter loads each word of a buffer lane by lane
// behind a bounds test (docs/kernel-notes.md). The host dispatches this once per step (and per GEMM probe), after the
// optimizer's update and before the step's forward passes; one invocation per texel, o·S of
// them, the grid folded past 65,535 workgroups.
@compute @workgroup_size(WG)
fn pack_weights(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let s4 = dims.x_stride / 4u;
    let i = (wg.x + wg.y * groups.x) * WG + lid;
    if i < dims.o * s4 {
        textureStore(w_packed, texel(i), weights4(i / s4, i % s4, dims.d));
    }
}

/// W[k, 4c .. 4c + 4], zero past column d: from `pack_weights`' texture with X_TEXTURE (S =
/// x_stride / 4 `s4`), else from the parameters.
fn tile_weights(k: u32, c: u32, d: u32, s4: u32) -> vec4<f32> {
    if X_TEXTURE {
        return textureLoad(w_texture, texel(k * s4 + c));
    }
    return weights4(k, c, d);
}

/// Stores the first `n` (≤ 4) components of `v` at partials[base ..].
fn store_partials(base: u32, v: vec4<f32>, n: u32) {
    partials[base] = v.x;
    if n > 1u {
        partials[base + 1u] = v.y;
    }
    if n > 2u {
        partials[base + 2u] = v.z;
    }
    if n > 3u {
        partials[base + 3u] = v.w;
    }
}

/// The sums of outputs k .. k + n (n ≤ 4) over one column group (`cols` ≤ 4 columns), output
/// i's at partials[base + i·d ..].
fn store_partials4(base: u32, d: u32, cols: u32, n: u32, s0: vec4<f32>, s1: vec4<f32>, s2: vec4<f32>, s3: vec4<f32>) {
    store_partials(base, s0, cols);
    if n > 1u {
        store_partials(base + d, s1, cols);
    }
    if n > 2u {
        store_partials(base + 2u * d, s2, cols);
    }
    if n > 3u {
        store_partials(base + 3u * d, s3, cols);
    }
}

/// Output e's logit, loss and δ, stored where the run keeps them: the loss as bce.wgsl
/// computes it from the logit, the target and `l` = 1 + (pos_weight − 1)·target.
fn store_output(e: u32, logit: f32, target_: f32, l: f32, g: f32) {
    if ROW_OUTPUTS {
        z[e] = logit;
        loss[e] = (1.0 - target_) * logit + l * (softplus_neg_abs(logit) + max(-logit, 0.0));
    }
    if ROW_OUTPUTS || !X_TEXTURE {
        delta_out[e] = g;
    }
}

/// Wide output k's δ factor at chunk row `row`: the batch's 1 / (rows · o), or in a lockstep
/// run its model's, 0 on the rows the model's fold holds out (bce.wgsl's `delta_scale`, over
/// this kernel's bindings).
fn delta_scale(k: u32, row: u32) -> f32 {
    if dims.held_out_at == NO_TABLE {
        return chunk.inv_count;
    }
    let held = pos_weight[dims.held_out_at + k / dims.outputs];
    if held >= 0.0 && dims.folds_at != NO_TABLE && pos_weight[dims.folds_at + chunk.first_row + row] == held {
        return 0.0;
    }
    return pos_weight[chunk.scales_at + u32(max(held, 0.0))];
}

/// Output k's target at chunk row `row`: Y has Dims' `outputs` a row (o, or a lockstep run's
/// outputs per model).
fn target_at(row: u32, k: u32) -> f32 {
    return y[row * dims.outputs + k % dims.outputs];
}

/// δ of outputs k .. k + 3 of batch row p (chunk row `row`), those below k + n, exactly as
/// bce.wgsl computes it from their logits, positive weights `pw` and δ factors (`delta_scale`),
/// zero from output k + n on; `store_output` stores each. Four outputs at a time, with no
/// vector indexed by a variable, so that `forward` hands them to its δ texture as they are,
/// not gathered into a vector by selects or by an index.
fn outputs4(p: u32, row: u32, k: u32, n: u32, o: u32, logit: vec4<f32>, pw: vec4<f32>) -> vec4<f32> {
    let e = p * o + k;
    var t = vec4(0.0);
    var scale = vec4(delta_scale(k, row));
    t.x = target_at(row, k);
    if n > 1u {
        t.y = target_at(row, k + 1u);
        scale.y = delta_scale(k + 1u, row);
    }
    if n > 2u {
        t.z = target_at(row, k + 2u);
        scale.z = delta_scale(k + 2u, row);
    }
    if n > 3u {
        t.w = target_at(row, k + 3u);
        scale.w = delta_scale(k + 3u, row);
    }
    let l = 1.0 + (pw - 1.0) * t;
    let s = vec4(sigmoid(logit.x), sigmoid(logit.y), sigmoid(logit.z), sigmoid(logit.w));
    let g = (l * s - pw * t) * scale;
    store_output(e, logit.x, t.x, l.x, g.x);
    if n > 1u {
        store_output(e + 1u, logit.y, t.y, l.y, g.y);
    }
    if n > 2u {
        store_output(e + 2u, logit.z, t.z, l.z, g.z);
    }
    if n > 3u {
        store_output(e + 3u, logit.w, t.w, l.w, g.w);
    }
    return select(vec4(0.0), g, vec4(0u, 1u, 2u, 3u) < vec4(n));
}

/// δ[p, k + 4l .. k + 4l + 4] (k a multiple of 4; outputs past the last repeat it), which lane
/// l hands out in `partial`: with X_TEXTURE one texel of `forward`'s δ texture, where four
/// words of the buffer cost a CPU adapter a loop over the lanes each.
fn delta4(p: u32, k: u32, l: u32) -> vec4<f32> {
    let o = dims.o;
    if X_TEXTURE {
        let o4 = (o + 3u) / 4u;
        return textureLoad(delta_texture, texel(p * o4 + min(k / 4u + l, o4 - 1u)));
    }
    let e = p * o;
    let j = k + 4u * l;
    return vec4(
        delta[e + min(j, o - 1u)],
        delta[e + min(j + 1u, o - 1u)],
        delta[e + min(j + 2u, o - 1u)],
        delta[e + min(j + 3u, o - 1u)],
    );
}

/// v of lanes 0 .. 3 as a matrix's columns (subgroupBroadcast's lane must be a constant).
fn lanes_low4(v: vec4<f32>) -> mat4x4<f32> {
    return mat4x4(
        subgroupBroadcast(v, 0u),
        subgroupBroadcast(v, 1u),
        subgroupBroadcast(v, 2u),
        subgroupBroadcast(v, 3u),
    );
}

/// v of lanes 4 .. 7 as a matrix's columns.
fn lanes_high4(v: vec4<f32>) -> mat4x4<f32> {
    return mat4x4(
        subgroupBroadcast(v, 4u),
        subgroupBroadcast(v, 5u),
        subgroupBroadcast(v, 6u),
        subgroupBroadcast(v, 7u),
    );
}

/// Whether the partial sums column group m of a pass: one of its COLUMN_GROUPS, and where
/// the columns the phase trains fit one pass (COLUMNS_END − COLUMNS_BEGIN ≤ COLUMN_GROUPS ·
/// WG), one that reaches them. A constant once the overrides are set, so the groups left out
/// compile to nothing (a branch at run time would not spare lavapipe their work: it runs
/// both sides under a mask).
fn sums_column_group(m: u32) -> bool {
    return m < COLUMN_GROUPS && COLUMNS_BEGIN + m * WG < COLUMNS_END;
}

/// v of lanes 0 .. 3, or with `high` of lanes 4 .. 7 (subgroupBroadcast's lane must be a
/// constant, and a shuffle from a lane chosen at run time costs more).
fn lane_quad(v: u32, high: bool) -> vec4<u32> {
    let low = vec4(
        subgroupBroadcast(v, 0u),
        subgroupBroadcast(v, 1u),
        subgroupBroadcast(v, 2u),
        subgroupBroadcast(v, 3u),
    );
    let upper = vec4(
        subgroupBroadcast(v, 4u),
        subgroupBroadcast(v, 5u),
        subgroupBroadcast(v, 6u),
        subgroupBroadcast(v, 7u),
    );
    return select(low, upper, high);
}

/// s + a·x_a + b·x_b + c·x_c + d·x_d, added in that order.
fn add4(s: vec4<f32>, a: f32, b: f32, c: f32, d: f32, x_a: vec4<f32>, x_b: vec4<f32>, x_c: vec4<f32>, x_d: vec4<f32>) -> vec4<f32> {
    return (((s + a * x_a) + b * x_b) + c * x_c) + d * x_d;
}

// Accumulators are named variables, never arrays indexed at run time: a CPU implementation
// keeps an array it cannot index statically in memory, one gather and scatter per access.

@compute @workgroup_size(WG)
fn forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let o = dims.o;
    let d = dims.d;
    let wide = TILE_OUTPUTS >= 8u;
    let widest = TILE_OUTPUTS == 16u;
    let out_tiles = (o + TILE_OUTPUTS - 1u) / TILE_OUTPUTS;
    let wid = wg.x + wg.y * groups.x;
    // The output tile comes from the workgroup alone: every invocation needs the same weights.
    let u = wid % out_tiles;
    let t = (wid / out_tiles) * WG + lid;
    let count = chunk.count;
    let s4 = dims.x_stride / 4u;
    // Rows past the end repeat the last one; their sums are not stored.
    let p0 = min(8u * t, count - 1u);
    let p1 = min(p0 + 1u, count - 1u);
    let p2 = min(p0 + 2u, count - 1u);
    let p3 = min(p0 + 3u, count - 1u);
    let p4 = min(p0 + 4u, count - 1u);
    let p5 = min(p0 + 5u, count - 1u);
    let p6 = min(p0 + 6u, count - 1u);
    let p7 = min(p0 + 7u, count - 1u);
    let row0 = rows[chunk.row_offset + p0];
    let row1 = rows[chunk.row_offset + p1];
    let row2 = rows[chunk.row_offset + p2];
    let row3 = rows[chunk.row_offset + p3];
    let row4 = rows[chunk.row_offset + p4];
    let row5 = rows[chunk.row_offset + p5];
    let row6 = rows[chunk.row_offset + p6];
    let row7 = rows[chunk.row_offset + p7];
    let r0 = row0 * s4;
    let r1 = row1 * s4;
    let r2 = row2 * s4;
    let r3 = row3 * s4;
    let r4 = row4 * s4;
    let r5 = row5 * s4;
    let r6 = row6 * s4;
    let r7 = row7 * s4;
    let k = TILE_OUTPUTS * u;
    // This lane's outputs in the tile, which it hands to the others (lane j: outputs k + j
    // and, for 16, k + 8 + j); outputs past the last repeat it, and their sums are not stored.
    let spread = min(TILE_OUTPUTS, 8u);
    let mine_lo = min(k + lane % spread, o - 1u);
    let mine_hi = min(k + 8u + lane % spread, o - 1u);
    // Row i's sums: a_i of outputs k .. k + 3, b_i of k + 4 .. k + 7, e_i of k + 8 .. k + 11,
    // f_i of k + 12 .. k + 15.
    var a0 = vec4(0.0);
    var a1 = vec4(0.0);
    var a2 = vec4(0.0);
    var a3 = vec4(0.0);
    var a4 = vec4(0.0);
    var a5 = vec4(0.0);
    var a6 = vec4(0.0);
    var a7 = vec4(0.0);
    var b0 = vec4(0.0);
    var b1 = vec4(0.0);
    var b2 = vec4(0.0);
    var b3 = vec4(0.0);
    var b4 = vec4(0.0);
    var b5 = vec4(0.0);
    var b6 = vec4(0.0);
    var b7 = vec4(0.0);
    var e0 = vec4(0.0);
    var e1 = vec4(0.0);
    var e2 = vec4(0.0);
    var e3 = vec4(0.0);
    var e4 = vec4(0.0);
    var e5 = vec4(0.0);
    var e6 = vec4(0.0);
    var e7 = vec4(0.0);
    var f0 = vec4(0.0);
    var f1 = vec4(0.0);
    var f2 = vec4(0.0);
    var f3 = vec4(0.0);
    var f4 = vec4(0.0);
    var f5 = vec4(0.0);
    var f6 = vec4(0.0);
    var f7 = vec4(0.0);
    var c = 0u;
    // Two column groups per iteration where the sums outgrow the registers (PAIR_COLUMNS),
    // each sum taking them in column order, as the loop after this one adds them.
    for (; PAIR_COLUMNS && c + 1u < s4; c += 2u) {
        let x0 = load_x(r0 + c);
        let x1 = load_x(r1 + c);
        let x2 = load_x(r2 + c);
        let x3 = load_x(r3 + c);
        let x4 = load_x(r4 + c);
        let x5 = load_x(r5 + c);
        let x6 = load_x(r6 + c);
        let x7 = load_x(r7 + c);
        let xn0 = load_x(r0 + c + 1u);
        let xn1 = load_x(r1 + c + 1u);
        let xn2 = load_x(r2 + c + 1u);
        let xn3 = load_x(r3 + c + 1u);
        let xn4 = load_x(r4 + c + 1u);
        let xn5 = load_x(r5 + c + 1u);
        let xn6 = load_x(r6 + c + 1u);
        let xn7 = load_x(r7 + c + 1u);
        let lo = tile_weights(mine_lo, c, d, s4);
        let lo_next = tile_weights(mine_lo, c + 1u, d, s4);
        let wa = lanes_low4(lo);
        let wa_next = lanes_low4(lo_next);
        a0 = (a0 + x0 * wa) + xn0 * wa_next;
        a1 = (a1 + x1 * wa) + xn1 * wa_next;
        a2 = (a2 + x2 * wa) + xn2 * wa_next;
        a3 = (a3 + x3 * wa) + xn3 * wa_next;
        a4 = (a4 + x4 * wa) + xn4 * wa_next;
        a5 = (a5 + x5 * wa) + xn5 * wa_next;
        a6 = (a6 + x6 * wa) + xn6 * wa_next;
        a7 = (a7 + x7 * wa) + xn7 * wa_next;
        if wide {
            let wb = lanes_high4(lo);
            let wb_next = lanes_high4(lo_next);
            b0 = (b0 + x0 * wb) + xn0 * wb_next;
            b1 = (b1 + x1 * wb) + xn1 * wb_next;
            b2 = (b2 + x2 * wb) + xn2 * wb_next;
            b3 = (b3 + x3 * wb) + xn3 * wb_next;
            b4 = (b4 + x4 * wb) + xn4 * wb_next;
            b5 = (b5 + x5 * wb) + xn5 * wb_next;
            b6 = (b6 + x6 * wb) + xn6 * wb_next;
            b7 = (b7 + x7 * wb) + xn7 * wb_next;
        }
        if widest {
            let hi = tile_weights(mine_hi, c, d, s4);
            let hi_next = tile_weights(mine_hi, c + 1u, d, s4);
            let we = lanes_low4(hi);
            let we_next = lanes_low4(hi_next);
            let wf = lanes_high4(hi);
            let wf_next = lanes_high4(hi_next);
            e0 = (e0 + x0 * we) + xn0 * we_next;
            e1 = (e1 + x1 * we) + xn1 * we_next;
            e2 = (e2 + x2 * we) + xn2 * we_next;
            e3 = (e3 + x3 * we) + xn3 * we_next;
            e4 = (e4 + x4 * we) + xn4 * we_next;
            e5 = (e5 + x5 * we) + xn5 * we_next;
            e6 = (e6 + x6 * we) + xn6 * we_next;
            e7 = (e7 + x7 * we) + xn7 * we_next;
            f0 = (f0 + x0 * wf) + xn0 * wf_next;
            f1 = (f1 + x1 * wf) + xn1 * wf_next;
            f2 = (f2 + x2 * wf) + xn2 * wf_next;
            f3 = (f3 + x3 * wf) + xn3 * wf_next;
            f4 = (f4 + x4 * wf) + xn4 * wf_next;
            f5 = (f5 + x5 * wf) + xn5 * wf_next;
            f6 = (f6 + x6 * wf) + xn6 * wf_next;
            f7 = (f7 + x7 * wf) + xn7 * wf_next;
        }
    }
    // The column groups left over: all of them without PAIR_COLUMNS, else at most one.
    for (; c < s4; c++) {
        let x0 = load_x(r0 + c);
        let x1 = load_x(r1 + c);
        let x2 = load_x(r2 + c);
        let x3 = load_x(r3 + c);
        let x4 = load_x(r4 + c);
        let x5 = load_x(r5 + c);
        let x6 = load_x(r6 + c);
        let x7 = load_x(r7 + c);
        // Row i's dot products with four weight vectors: x_i · mat4x4(the vectors).
        let lo = tile_weights(mine_lo, c, d, s4);
        let wa = lanes_low4(lo);
        a0 += x0 * wa;
        a1 += x1 * wa;
        a2 += x2 * wa;
        a3 += x3 * wa;
        a4 += x4 * wa;
        a5 += x5 * wa;
        a6 += x6 * wa;
        a7 += x7 * wa;
        if wide {
            let wb = lanes_high4(lo);
            b0 += x0 * wb;
            b1 += x1 * wb;
            b2 += x2 * wb;
            b3 += x3 * wb;
            b4 += x4 * wb;
            b5 += x5 * wb;
            b6 += x6 * wb;
            b7 += x7 * wb;
        }
        if widest {
            let hi = tile_weights(mine_hi, c, d, s4);
            let we = lanes_low4(hi);
            let wf = lanes_high4(hi);
            e0 += x0 * we;
            e1 += x1 * we;
            e2 += x2 * we;
            e3 += x3 * we;
            e4 += x4 * we;
            e5 += x5 * we;
            e6 += x6 * we;
            e7 += x7 * we;
            f0 += x0 * wf;
            f1 += x1 * wf;
            f2 += x2 * wf;
            f3 += x3 * wf;
            f4 += x4 * wf;
            f5 += x5 * wf;
            f6 += x6 * wf;
            f7 += x7 * wf;
        }
    }
    if 8u * t >= count {
        return;
    }
    // Stored by loops over arrays, once per invocation: one copy of the loss's and δ's code,
    // not one per row and output (unrolled, lavapipe compiled this entry in ~4× the time).
    var sums = array<mat4x4<f32>, 8>(
        mat4x4(a0, b0, e0, f0),
        mat4x4(a1, b1, e1, f1),
        mat4x4(a2, b2, e2, f2),
        mat4x4(a3, b3, e3, f3),
        mat4x4(a4, b4, e4, f4),
        mat4x4(a5, b5, e5, f5),
        mat4x4(a6, b6, e6, f6),
        mat4x4(a7, b7, e7, f7),
    );
    var tile_rows = array<u32, 8>(row0, row1, row2, row3, row4, row5, row6, row7);
    let n = min(TILE_OUTPUTS, o - k);
    let o4 = (o + 3u) / 4u;
    let last = o - 1u;
    let b = o * d;
    // Outputs k + 4q .. k + 4q + 3 of the tile's rows, their biases and positive weights
    // loaded once for all rows (those past the last output repeat it).
    for (var q = 0u; 4u * q < n; q++) {
        let kq = k + 4u * q;
        let k1 = min(kq + 1u, last);
        let k2 = min(kq + 2u, last);
        let k3 = min(kq + 3u, last);
        let bias = vec4(params[b + kq], params[b + k1], params[b + k2], params[b + k3]);
        let pw = vec4(pos_weight[kq], pos_weight[k1], pos_weight[k2], pos_weight[k3]);
        for (var i = 0u; i < min(8u, count - p0); i++) {
            let logit = sums[i][q] + bias;
            let g = outputs4(p0 + i, tile_rows[i], kq, n - 4u * q, o, logit, pw);
            if X_TEXTURE {
                textureStore(delta_packed, texel((p0 + i) * o4 + k / 4u + q), g);
            }
        }
    }
}

@compute @workgroup_size(WG)
fn partial(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let o = dims.o;
    let d = dims.d;
    let s4 = dims.x_stride / 4u;
    let wide = TILE_OUTPUTS >= 8u;
    let widest = TILE_OUTPUTS == 16u;
    let out_tiles = (o + TILE_OUTPUTS - 1u) / TILE_OUTPUTS;
    let wid = wg.x + wg.y * groups.x;
    // The block and the output tile come from the workgroup alone: every invocation needs the
    // same row indices and δ; the invocations split the column groups.
    let u = wid % out_tiles;
    let block = wid / out_tiles;
    let first = block * dims.rows_per_block;
    if first >= chunk.count {
        return;
    }
    let last = min(first + dims.rows_per_block, chunk.count);
    let k = TILE_OUTPUTS * u;
    let n = min(TILE_OUTPUTS, o - k);
    // This lane's outputs in the tile, which it hands to the others (lane l: outputs
    // k + 4l .. k + 4l + 3); outputs past the last repeat it, and their sums are not stored.
    let mine = min(lane, TILE_OUTPUTS / 4u - 1u);
    let out = (chunk.block_base + block) * partial_stride(dims.n_params);
    let row_offset = chunk.row_offset;
    var lane_row = 0u;
    for (var c0 = COLUMNS_BEGIN; c0 < min(s4, COLUMNS_END); c0 += COLUMN_GROUPS * WG) {
        // Column group m of this pass: c_m. Invocations past the last column group repeat
        // it; their sums are not stored. s<j>_m: output k + j's sums over it.
        // #unroll m
        let c_m = min(c0 + m * WG + lid, s4 - 1u);
        var s0_m = vec4(0.0);
        var s1_m = vec4(0.0);
        var s2_m = vec4(0.0);
        var s3_m = vec4(0.0);
        var s4_m = vec4(0.0);
        var s5_m = vec4(0.0);
        var s6_m = vec4(0.0);
        var s7_m = vec4(0.0);
        var s8_m = vec4(0.0);
        var s9_m = vec4(0.0);
        var s10_m = vec4(0.0);
        var s11_m = vec4(0.0);
        var s12_m = vec4(0.0);
        var s13_m = vec4(0.0);
        var s14_m = vec4(0.0);
        var s15_m = vec4(0.0);
        // #end
        // The bias's sums: lane l's of outputs k + 4l .. k + 4l + 3.
        var bias = vec4(0.0);
        var p = first;
        // Four rows at a time, each sum taking the four rows' terms in row order (as the loop
        // after this one adds them), so a sum lavapipe keeps in memory is loaded and stored
        // once per four rows.
        for (; QUAD_ROWS && p + 3u < last; p += 4u) {
            let j = (p - first) % 8u;
            if j == 0u {
                lane_row = rows[row_offset + min(p + lane % 8u, last - 1u)];
            }
            // j is 0 or 4: the four rows' indices are lanes j .. j + 3's.
            let bases = lane_quad(lane_row, j == 4u) * s4;
            let base_a = bases.x;
            let base_b = bases.y;
            let base_c = bases.z;
            let base_d = bases.w;
            let v_a = delta4(p, k, mine);
            let v_b = delta4(p + 1u, k, mine);
            let v_c = delta4(p + 2u, k, mine);
            let v_d = delta4(p + 3u, k, mine);
            bias = (((bias + v_a) + v_b) + v_c) + v_d;
            // Row a's δ of outputs k + 4i .. k + 4i + 3: da[i]; likewise rows b, c and d.
            let da = lanes_low4(v_a);
            let db = lanes_low4(v_b);
            let dc = lanes_low4(v_c);
            let dd = lanes_low4(v_d);
            // #unroll m
            if sums_column_group(m) {
                let xa_m = load_x(base_a + c_m);
                let xb_m = load_x(base_b + c_m);
                let xc_m = load_x(base_c + c_m);
                let xd_m = load_x(base_d + c_m);
                s0_m = add4(s0_m, da[0].x, db[0].x, dc[0].x, dd[0].x, xa_m, xb_m, xc_m, xd_m);
                s1_m = add4(s1_m, da[0].y, db[0].y, dc[0].y, dd[0].y, xa_m, xb_m, xc_m, xd_m);
                s2_m = add4(s2_m, da[0].z, db[0].z, dc[0].z, dd[0].z, xa_m, xb_m, xc_m, xd_m);
                s3_m = add4(s3_m, da[0].w, db[0].w, dc[0].w, dd[0].w, xa_m, xb_m, xc_m, xd_m);
                if wide {
                    s4_m = add4(s4_m, da[1].x, db[1].x, dc[1].x, dd[1].x, xa_m, xb_m, xc_m, xd_m);
                    s5_m = add4(s5_m, da[1].y, db[1].y, dc[1].y, dd[1].y, xa_m, xb_m, xc_m, xd_m);
                    s6_m = add4(s6_m, da[1].z, db[1].z, dc[1].z, dd[1].z, xa_m, xb_m, xc_m, xd_m);
                    s7_m = add4(s7_m, da[1].w, db[1].w, dc[1].w, dd[1].w, xa_m, xb_m, xc_m, xd_m);
                }
                if widest {
                    s8_m = add4(s8_m, da[2].x, db[2].x, dc[2].x, dd[2].x, xa_m, xb_m, xc_m, xd_m);
                    s9_m = add4(s9_m, da[2].y, db[2].y, dc[2].y, dd[2].y, xa_m, xb_m, xc_m, xd_m);
                    s10_m = add4(s10_m, da[2].z, db[2].z, dc[2].z, dd[2].z, xa_m, xb_m, xc_m, xd_m);
                    s11_m = add4(s11_m, da[2].w, db[2].w, dc[2].w, dd[2].w, xa_m, xb_m, xc_m, xd_m);
                    s12_m = add4(s12_m, da[3].x, db[3].x, dc[3].x, dd[3].x, xa_m, xb_m, xc_m, xd_m);
                    s13_m = add4(s13_m, da[3].y, db[3].y, dc[3].y, dd[3].y, xa_m, xb_m, xc_m, xd_m);
                    s14_m = add4(s14_m, da[3].z, db[3].z, dc[3].z, dd[3].z, xa_m, xb_m, xc_m, xd_m);
                    s15_m = add4(s15_m, da[3].w, db[3].w, dc[3].w, dd[3].w, xa_m, xb_m, xc_m, xd_m);
                }
            }
            // #end
        }
        for (; p < last; p++) {
            // Every 8 rows, lane j loads the index of row p + j, and each row's is shuffled out.
            let j = (p - first) % 8u;
            if j == 0u {
                lane_row = rows[row_offset + min(p + lane % 8u, last - 1u)];
            }
            let base = subgroupShuffle(lane_row, j) * s4;
            let v = delta4(p, k, mine);
            bias += v;
            let dv = lanes_low4(v);
            let d0 = dv[0];
            let d1 = dv[1];
            let d2 = dv[2];
            let d3 = dv[3];
            // #unroll m
            if sums_column_group(m) {
                let x_m = load_x(base + c_m);
                s0_m += d0.x * x_m;
                s1_m += d0.y * x_m;
                s2_m += d0.z * x_m;
                s3_m += d0.w * x_m;
                if wide {
                    s4_m += d1.x * x_m;
                    s5_m += d1.y * x_m;
                    s6_m += d1.z * x_m;
                    s7_m += d1.w * x_m;
                }
                if widest {
                    s8_m += d2.x * x_m;
                    s9_m += d2.y * x_m;
                    s10_m += d2.z * x_m;
                    s11_m += d2.w * x_m;
                    s12_m += d3.x * x_m;
                    s13_m += d3.y * x_m;
                    s14_m += d3.z * x_m;
                    s15_m += d3.w * x_m;
                }
            }
            // #end
        }
        let bias_all = lanes_low4(bias);
        let b0 = bias_all[0];
        let b1 = bias_all[1];
        let b2 = bias_all[2];
        let b3 = bias_all[3];
        if c0 == 0u && lid == 0u {
            let q = out + o * d + k;
            store_partials(q, b0, min(n, 4u));
            if n > 4u {
                store_partials(q + 4u, b1, min(n - 4u, 4u));
            }
            if n > 8u {
                store_partials(q + 8u, b2, min(n - 8u, 4u));
            }
            if n > 12u {
                store_partials(q + 12u, b3, n - 12u);
            }
        }
        // #unroll m
        if sums_column_group(m) && c0 + m * WG + lid < s4 {
            let q = out + k * d + 4u * c_m;
            let cols = min(4u, d - 4u * c_m);
            store_partials4(q, d, cols, min(n, 4u), s0_m, s1_m, s2_m, s3_m);
            if n > 4u {
                store_partials4(q + 4u * d, d, cols, min(n - 4u, 4u), s4_m, s5_m, s6_m, s7_m);
            }
            if n > 8u {
                store_partials4(q + 8u * d, d, cols, min(n - 8u, 4u), s8_m, s9_m, s10_m, s11_m);
            }
            if n > 12u {
                store_partials4(q + 12u * d, d, cols, n - 12u, s12_m, s13_m, s14_m, s15_m);
            }
        }
        // #end
    }
}
