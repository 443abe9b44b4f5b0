// Forward pass and gradient partials as small register-tiled GEMMs: each invocation owns 4
// rows × T outputs (forward, T = 4 or 8) or 4 columns × T outputs (partial, T = 4, 8 or 16),
// T = TILE_OUTPUTS, so one vec4 load of X feeds T outputs and one weight vector four rows.
// Same inputs, outputs and partials layout as linear_forward and linear_backward.partial
// (bce and the optimizers' block sums are shared); only the order of the additions inside a
// dot product differs (vec4 by vec4).
//
//   forward: workgroup (row tiles, output tile u), invocation t of its row tiles computes, for
//            p = 4t .. 4t + 3 < count and k = T·u .. T·u + T − 1 < o,
//            z[p·o + k] = Σ_c dot(x[row(p), 4c .. 4c + 3], W[k, 4c ..]) + b[k], and from it the
//            loss and δ exactly as bce.wgsl (so the step needs no bce dispatch)
//   partial: workgroup (block, output tile u), invocation lid for column groups
//            c = lid, lid + WG, … < x_stride / 4, sums over the block's rows
//            p = block·R .. min(block·R + R, count) in ascending order,
//            W[k, 4c .. 4c + 3]:  δ[p, k] · x[row(p), 4c .. 4c + 3]
//            b[k]:                δ[p, k]              (in the first column groups' pass)
//            and writes them to partials[(block_base + block) · S + …] as linear_backward does.
//
// What a workgroup shares (its output tile's weights in the forward pass, its rows' δ in the
// partial) is loaded once per subgroup: lane j loads output k + j's and subgroupBroadcast
// hands it to every lane. On lavapipe a load at an address uniform across the subgroup still
// costs ~60 instructions and one gathered across its 8 lanes ~16 per lane, where a broadcast
// from a fixed lane is a couple: S3's step (2,048 × 1,024 → 64) executed 1.00 G instructions
// against 2.60 G with uniform loads, and 0.74 G with X from its texture too (BENCHMARKS.md).
//
// Bindings (group 0):
//   0 dims      storage, read    Dims: d, o, rows_per_block R, n_params P, x_stride
//   1 chunk     storage, dynamic ChunkStep: count, row_offset, block_base
//   2 x         storage, read    vec4<f32>[chunk_rows * x_stride / 4], rows zero-padded
//   3 rows      storage, read    u32[] chunk-local row indices
//   4 params    storage, read    f32[P]: W row-major, then b                      (forward)
//   5 z         storage, rw      f32[count * o]                                   (forward)
//   6 delta     storage, read    f32[count * o]                                   (partial)
//   7 partials  storage, rw      f32[blocks * S]                                  (partial)
//   8 y         storage, read    f32[chunk_rows * o]                              (forward)
//   9 pos_weight storage, read   f32[o]                                           (forward)
//  10 delta_out storage, rw      f32[count * o], the δ buffer bound at 6          (forward)
//  11 loss      storage, rw      f32[count * o]                                   (forward)
//  18 x_texture texture_2d<f32>  X's words again, read with X_TEXTURE (loads.wgsl)
//
// Invariants: subgroups have at least 8 invocations (TILE_OUTPUTS or 8 lanes hand out the
// shared values; the host builds these kernels only where the adapter's smallest subgroup is
// that large), and every invocation reaches every subgroupBroadcast: no invocation leaves
// before its last one (invocations past the last row repeat it and store nothing). x_stride is
// a multiple of 4 and X's padding columns are zero; an invocation loops x_stride / 4 times
// (forward) or ⌈x_stride / 4 / WG⌉ · R times (partial), within llvmpipe's loop limit for the
// shapes the host sends here; the grid is 2-D only to pass 65,535 workgroups per dimension, so
// the workgroup index is linearised and guarded. The output tile and (partial) the block come
// from the workgroup id alone, so the loops are uniform across every subgroup.

// Dims, ChunkStep, sigmoid and softplus_neg_abs come from common.wgsl, load_x and weights4
// from loads.wgsl, which the host (gpu::SHADERS) puts before this file.

override WG: u32 = 64u;
// Outputs per workgroup: 8 (each gathered word of X feeds eight accumulators), 4 (for at
// most four outputs, where the other four would only repeat the last) or, in the partial
// only, 16 (for more than eight outputs; the forward pass measured no faster with 16).
override TILE_OUTPUTS: u32 = 8u;

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

/// Output k of batch row p (chunk row `row`) from its dot product: the logit, and the loss
/// and δ exactly as bce.wgsl computes them.
fn store_output(p: u32, row: u32, k: u32, sum: f32) {
    let o = dims.o;
    let e = p * o + k;
    let logit = sum + params[o * dims.d + k];
    z[e] = logit;
    let target_ = y[row * o + k];
    let pw = pos_weight[k];
    let l = 1.0 + (pw - 1.0) * target_;
    loss[e] = (1.0 - target_) * logit + l * (softplus_neg_abs(logit) + max(-logit, 0.0));
    delta_out[e] = (l * sigmoid(logit) - pw * target_) * chunk.inv_count;
}

/// Outputs k .. k + n (n ≤ 4) of batch row p from their dot products.
fn store_outputs(p: u32, row: u32, k: u32, sums: vec4<f32>, n: u32) {
    store_output(p, row, k, sums.x);
    if n > 1u {
        store_output(p, row, k + 1u, sums.y);
    }
    if n > 2u {
        store_output(p, row, k + 2u, sums.z);
    }
    if n > 3u {
        store_output(p, row, k + 3u, sums.w);
    }
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
    for (var c = 0u; c < s4; c++) {
        let x0 = load_x(r0 + c);
        let x1 = load_x(r1 + c);
        let x2 = load_x(r2 + c);
        let x3 = load_x(r3 + c);
        let x4 = load_x(r4 + c);
        let x5 = load_x(r5 + c);
        let x6 = load_x(r6 + c);
        let x7 = load_x(r7 + c);
        let lo = weights4(mine_lo, c, d);
        let w0 = subgroupBroadcast(lo, 0u);
        let w1 = subgroupBroadcast(lo, 1u);
        let w2 = subgroupBroadcast(lo, 2u);
        let w3 = subgroupBroadcast(lo, 3u);
        a0 += vec4(dot(x0, w0), dot(x0, w1), dot(x0, w2), dot(x0, w3));
        a1 += vec4(dot(x1, w0), dot(x1, w1), dot(x1, w2), dot(x1, w3));
        a2 += vec4(dot(x2, w0), dot(x2, w1), dot(x2, w2), dot(x2, w3));
        a3 += vec4(dot(x3, w0), dot(x3, w1), dot(x3, w2), dot(x3, w3));
        a4 += vec4(dot(x4, w0), dot(x4, w1), dot(x4, w2), dot(x4, w3));
        a5 += vec4(dot(x5, w0), dot(x5, w1), dot(x5, w2), dot(x5, w3));
        a6 += vec4(dot(x6, w0), dot(x6, w1), dot(x6, w2), dot(x6, w3));
        a7 += vec4(dot(x7, w0), dot(x7, w1), dot(x7, w2), dot(x7, w3));
        if wide {
            let w4 = subgroupBroadcast(lo, 4u);
            let w5 = subgroupBroadcast(lo, 5u);
            let w6 = subgroupBroadcast(lo, 6u);
            let w7 = subgroupBroadcast(lo, 7u);
            b0 += vec4(dot(x0, w4), dot(x0, w5), dot(x0, w6), dot(x0, w7));
            b1 += vec4(dot(x1, w4), dot(x1, w5), dot(x1, w6), dot(x1, w7));
            b2 += vec4(dot(x2, w4), dot(x2, w5), dot(x2, w6), dot(x2, w7));
            b3 += vec4(dot(x3, w4), dot(x3, w5), dot(x3, w6), dot(x3, w7));
            b4 += vec4(dot(x4, w4), dot(x4, w5), dot(x4, w6), dot(x4, w7));
            b5 += vec4(dot(x5, w4), dot(x5, w5), dot(x5, w6), dot(x5, w7));
            b6 += vec4(dot(x6, w4), dot(x6, w5), dot(x6, w6), dot(x6, w7));
            b7 += vec4(dot(x7, w4), dot(x7, w5), dot(x7, w6), dot(x7, w7));
        }
        if widest {
            let hi = weights4(mine_hi, c, d);
            let w8 = subgroupBroadcast(hi, 0u);
            let w9 = subgroupBroadcast(hi, 1u);
            let w10 = subgroupBroadcast(hi, 2u);
            let w11 = subgroupBroadcast(hi, 3u);
            e0 += vec4(dot(x0, w8), dot(x0, w9), dot(x0, w10), dot(x0, w11));
            e1 += vec4(dot(x1, w8), dot(x1, w9), dot(x1, w10), dot(x1, w11));
            e2 += vec4(dot(x2, w8), dot(x2, w9), dot(x2, w10), dot(x2, w11));
            e3 += vec4(dot(x3, w8), dot(x3, w9), dot(x3, w10), dot(x3, w11));
            e4 += vec4(dot(x4, w8), dot(x4, w9), dot(x4, w10), dot(x4, w11));
            e5 += vec4(dot(x5, w8), dot(x5, w9), dot(x5, w10), dot(x5, w11));
            e6 += vec4(dot(x6, w8), dot(x6, w9), dot(x6, w10), dot(x6, w11));
            e7 += vec4(dot(x7, w8), dot(x7, w9), dot(x7, w10), dot(x7, w11));
            let w12 = subgroupBroadcast(hi, 4u);
            let w13 = subgroupBroadcast(hi, 5u);
            let w14 = subgroupBroadcast(hi, 6u);
            let w15 = subgroupBroadcast(hi, 7u);
            f0 += vec4(dot(x0, w12), dot(x0, w13), dot(x0, w14), dot(x0, w15));
            f1 += vec4(dot(x1, w12), dot(x1, w13), dot(x1, w14), dot(x1, w15));
            f2 += vec4(dot(x2, w12), dot(x2, w13), dot(x2, w14), dot(x2, w15));
            f3 += vec4(dot(x3, w12), dot(x3, w13), dot(x3, w14), dot(x3, w15));
            f4 += vec4(dot(x4, w12), dot(x4, w13), dot(x4, w14), dot(x4, w15));
            f5 += vec4(dot(x5, w12), dot(x5, w13), dot(x5, w14), dot(x5, w15));
            f6 += vec4(dot(x6, w12), dot(x6, w13), dot(x6, w14), dot(x6, w15));
            f7 += vec4(dot(x7, w12), dot(x7, w13), dot(x7, w14), dot(x7, w15));
        }
    }
    if 8u * t >= count {
        return;
    }
    let n = min(TILE_OUTPUTS, o - k);
    store_outputs(p0, row0, k, a0, min(n, 4u));
    if p0 + 1u < count {
        store_outputs(p1, row1, k, a1, min(n, 4u));
    }
    if p0 + 2u < count {
        store_outputs(p2, row2, k, a2, min(n, 4u));
    }
    if p0 + 3u < count {
        store_outputs(p3, row3, k, a3, min(n, 4u));
    }
    if p0 + 4u < count {
        store_outputs(p4, row4, k, a4, min(n, 4u));
    }
    if p0 + 5u < count {
        store_outputs(p5, row5, k, a5, min(n, 4u));
    }
    if p0 + 6u < count {
        store_outputs(p6, row6, k, a6, min(n, 4u));
    }
    if p0 + 7u < count {
        store_outputs(p7, row7, k, a7, min(n, 4u));
    }
    if n > 4u {
        store_outputs(p0, row0, k + 4u, b0, min(n - 4u, 4u));
        if p0 + 1u < count {
            store_outputs(p1, row1, k + 4u, b1, min(n - 4u, 4u));
        }
        if p0 + 2u < count {
            store_outputs(p2, row2, k + 4u, b2, min(n - 4u, 4u));
        }
        if p0 + 3u < count {
            store_outputs(p3, row3, k + 4u, b3, min(n - 4u, 4u));
        }
        if p0 + 4u < count {
            store_outputs(p4, row4, k + 4u, b4, min(n - 4u, 4u));
        }
        if p0 + 5u < count {
            store_outputs(p5, row5, k + 4u, b5, min(n - 4u, 4u));
        }
        if p0 + 6u < count {
            store_outputs(p6, row6, k + 4u, b6, min(n - 4u, 4u));
        }
        if p0 + 7u < count {
            store_outputs(p7, row7, k + 4u, b7, min(n - 4u, 4u));
        }
    }
    if n > 8u {
        store_outputs(p0, row0, k + 8u, e0, min(n - 8u, 4u));
        if p0 + 1u < count {
            store_outputs(p1, row1, k + 8u, e1, min(n - 8u, 4u));
        }
        if p0 + 2u < count {
            store_outputs(p2, row2, k + 8u, e2, min(n - 8u, 4u));
        }
        if p0 + 3u < count {
            store_outputs(p3, row3, k + 8u, e3, min(n - 8u, 4u));
        }
        if p0 + 4u < count {
            store_outputs(p4, row4, k + 8u, e4, min(n - 8u, 4u));
        }
        if p0 + 5u < count {
            store_outputs(p5, row5, k + 8u, e5, min(n - 8u, 4u));
        }
        if p0 + 6u < count {
            store_outputs(p6, row6, k + 8u, e6, min(n - 8u, 4u));
        }
        if p0 + 7u < count {
            store_outputs(p7, row7, k + 8u, e7, min(n - 8u, 4u));
        }
    }
    if n > 12u {
        store_outputs(p0, row0, k + 12u, f0, n - 12u);
        if p0 + 1u < count {
            store_outputs(p1, row1, k + 12u, f1, n - 12u);
        }
        if p0 + 2u < count {
            store_outputs(p2, row2, k + 12u, f2, n - 12u);
        }
        if p0 + 3u < count {
            store_outputs(p3, row3, k + 12u, f3, n - 12u);
        }
        if p0 + 4u < count {
            store_outputs(p4, row4, k + 12u, f4, n - 12u);
        }
        if p0 + 5u < count {
            store_outputs(p5, row5, k + 12u, f5, n - 12u);
        }
        if p0 + 6u < count {
            store_outputs(p6, row6, k + 12u, f6, n - 12u);
        }
        if p0 + 7u < count {
            store_outputs(p7, row7, k + 12u, f7, n - 12u);
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
    // This lane's outputs in the tile, which it hands to the others (lane j: outputs k + j
    // and, for 16, k + 8 + j); outputs past the last repeat it, and their sums are not stored.
    let spread = min(TILE_OUTPUTS, 8u);
    let mine_lo = min(k + lane % spread, o - 1u);
    let mine_hi = min(k + 8u + lane % spread, o - 1u);
    let out = (chunk.block_base + block) * partial_stride(dims.n_params);
    let row_offset = chunk.row_offset;
    var lane_row = 0u;
    for (var c0 = 0u; c0 < s4; c0 += WG) {
        // Invocations past the last column group repeat it; their sums are not stored.
        let c = min(c0 + lid, s4 - 1u);
        var a0 = vec4(0.0);
        var a1 = vec4(0.0);
        var a2 = vec4(0.0);
        var a3 = vec4(0.0);
        var a4 = vec4(0.0);
        var a5 = vec4(0.0);
        var a6 = vec4(0.0);
        var a7 = vec4(0.0);
        var a8 = vec4(0.0);
        var a9 = vec4(0.0);
        var a10 = vec4(0.0);
        var a11 = vec4(0.0);
        var a12 = vec4(0.0);
        var a13 = vec4(0.0);
        var a14 = vec4(0.0);
        var a15 = vec4(0.0);
        // The bias's sums: lane j's of outputs k + j and k + 8 + j.
        var bias_lo = 0.0;
        var bias_hi = 0.0;
        for (var p = first; p < last; p++) {
            // Every 8 rows, lane j loads the index of row p + j, and each row's is shuffled out.
            let j = (p - first) % 8u;
            if j == 0u {
                lane_row = rows[row_offset + min(p + lane % 8u, last - 1u)];
            }
            let xv = load_x(subgroupShuffle(lane_row, j) * s4 + c);
            let e = p * o;
            let lo = delta[e + mine_lo];
            bias_lo += lo;
            let d0 = vec4(
                subgroupBroadcast(lo, 0u),
                subgroupBroadcast(lo, 1u),
                subgroupBroadcast(lo, 2u),
                subgroupBroadcast(lo, 3u),
            );
            a0 += d0.x * xv;
            a1 += d0.y * xv;
            a2 += d0.z * xv;
            a3 += d0.w * xv;
            if wide {
                let d1 = vec4(
                    subgroupBroadcast(lo, 4u),
                    subgroupBroadcast(lo, 5u),
                    subgroupBroadcast(lo, 6u),
                    subgroupBroadcast(lo, 7u),
                );
                a4 += d1.x * xv;
                a5 += d1.y * xv;
                a6 += d1.z * xv;
                a7 += d1.w * xv;
            }
            if widest {
                let hi = delta[e + mine_hi];
                bias_hi += hi;
                let d2 = vec4(
                    subgroupBroadcast(hi, 0u),
                    subgroupBroadcast(hi, 1u),
                    subgroupBroadcast(hi, 2u),
                    subgroupBroadcast(hi, 3u),
                );
                let d3 = vec4(
                    subgroupBroadcast(hi, 4u),
                    subgroupBroadcast(hi, 5u),
                    subgroupBroadcast(hi, 6u),
                    subgroupBroadcast(hi, 7u),
                );
                a8 += d2.x * xv;
                a9 += d2.y * xv;
                a10 += d2.z * xv;
                a11 += d2.w * xv;
                a12 += d3.x * xv;
                a13 += d3.y * xv;
                a14 += d3.z * xv;
                a15 += d3.w * xv;
            }
        }
        let b0 = vec4(
            subgroupBroadcast(bias_lo, 0u),
            subgroupBroadcast(bias_lo, 1u),
            subgroupBroadcast(bias_lo, 2u),
            subgroupBroadcast(bias_lo, 3u),
        );
        let b1 = vec4(
            subgroupBroadcast(bias_lo, 4u),
            subgroupBroadcast(bias_lo, 5u),
            subgroupBroadcast(bias_lo, 6u),
            subgroupBroadcast(bias_lo, 7u),
        );
        let b2 = vec4(
            subgroupBroadcast(bias_hi, 0u),
            subgroupBroadcast(bias_hi, 1u),
            subgroupBroadcast(bias_hi, 2u),
            subgroupBroadcast(bias_hi, 3u),
        );
        let b3 = vec4(
            subgroupBroadcast(bias_hi, 4u),
            subgroupBroadcast(bias_hi, 5u),
            subgroupBroadcast(bias_hi, 6u),
            subgroupBroadcast(bias_hi, 7u),
        );
        if c0 == 0u && lid == 0u {
            store_partials(out + o * d + k, b0, min(n, 4u));
            if n > 4u {
                store_partials(out + o * d + k + 4u, b1, min(n - 4u, 4u));
            }
            if n > 8u {
                store_partials(out + o * d + k + 8u, b2, min(n - 8u, 4u));
            }
            if n > 12u {
                store_partials(out + o * d + k + 12u, b3, n - 12u);
            }
        }
        if c0 + lid < s4 {
            let cols = min(4u, d - 4u * c);
            let q = out + k * d + 4u * c;
            store_partials(q, a0, cols);
            if n > 1u {
                store_partials(q + d, a1, cols);
            }
            if n > 2u {
                store_partials(q + 2u * d, a2, cols);
            }
            if n > 3u {
                store_partials(q + 3u * d, a3, cols);
            }
            if n > 4u {
                store_partials(q + 4u * d, a4, cols);
            }
            if n > 5u {
                store_partials(q + 5u * d, a5, cols);
            }
            if n > 6u {
                store_partials(q + 6u * d, a6, cols);
            }
            if n > 7u {
                store_partials(q + 7u * d, a7, cols);
            }
            if n > 8u {
                store_partials(q + 8u * d, a8, cols);
            }
            if n > 9u {
                store_partials(q + 9u * d, a9, cols);
            }
            if n > 10u {
                store_partials(q + 10u * d, a10, cols);
            }
            if n > 11u {
                store_partials(q + 11u * d, a11, cols);
            }
            if n > 12u {
                store_partials(q + 12u * d, a12, cols);
            }
            if n > 13u {
                store_partials(q + 13u * d, a13, cols);
            }
            if n > 14u {
                store_partials(q + 14u * d, a14, cols);
            }
            if n > 15u {
                store_partials(q + 15u * d, a15, cols);
            }
        }
    }
}
