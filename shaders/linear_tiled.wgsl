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
//            c = lid, lid + WG, … ≤ x_stride / 4, sums over the block's rows
//            p = block·R .. min(block·R + R, count) in ascending order,
//            W[k, 4c .. 4c + 3]:  δ[p, k] · x[row(p), 4c .. 4c + 3]   (c < x_stride / 4)
//            b[k]:                δ[p, k]                             (c = x_stride / 4)
//            and writes them to partials[(block_base + block) · S + …] as linear_backward does.
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
//
// Invariants: x_stride is a multiple of 4 and X's padding columns are zero; an invocation
// loops x_stride / 4 times (forward) or ⌈(x_stride / 4 + 1) / WG⌉ · R times (partial), within
// llvmpipe's loop limit for the shapes the host sends here; the grid is 2-D only to pass
// 65,535 workgroups per dimension, so the workgroup index is linearised and guarded. What a
// workgroup shares comes from its workgroup id, so loads of it are uniform across the
// invocations — the one kind of load a CPU implementation (llvmpipe) makes without a gather.

// Dims, ChunkStep, sigmoid and softplus_neg_abs come from common.wgsl, weights4 from
// weights.wgsl, which the host (gpu::SHADERS) puts before this file.

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
) {
    let o = dims.o;
    let wide = TILE_OUTPUTS == 8u;
    let out_tiles = (o + TILE_OUTPUTS - 1u) / TILE_OUTPUTS;
    let wid = wg.x + wg.y * groups.x;
    // The output tile comes from the workgroup alone, so every invocation reads the same
    // weights: a CPU implementation loads them once for all lanes instead of gathering.
    let u = wid % out_tiles;
    let t = (wid / out_tiles) * WG + lid;
    let count = chunk.count;
    if 4u * t >= count {
        return;
    }
    let s4 = dims.x_stride / 4u;
    // Rows past the end repeat the last one; their sums are not stored.
    let p0 = 4u * t;
    let p1 = min(p0 + 1u, count - 1u);
    let p2 = min(p0 + 2u, count - 1u);
    let p3 = min(p0 + 3u, count - 1u);
    let row0 = rows[chunk.row_offset + p0];
    let row1 = rows[chunk.row_offset + p1];
    let row2 = rows[chunk.row_offset + p2];
    let row3 = rows[chunk.row_offset + p3];
    let r0 = row0 * s4;
    let r1 = row1 * s4;
    let r2 = row2 * s4;
    let r3 = row3 * s4;
    let k = TILE_OUTPUTS * u;
    // Outputs past the last repeat it; their sums are not stored.
    let lo = min(vec4(k) + vec4(0u, 1u, 2u, 3u), vec4(o - 1u));
    let hi = min(vec4(k) + vec4(4u, 5u, 6u, 7u), vec4(o - 1u));
    // a: outputs k .. k + 3 of rows 4t .. 4t + 3; b: outputs k + 4 .. k + 7 (wide tiles).
    var a0 = vec4(0.0);
    var a1 = vec4(0.0);
    var a2 = vec4(0.0);
    var a3 = vec4(0.0);
    var b0 = vec4(0.0);
    var b1 = vec4(0.0);
    var b2 = vec4(0.0);
    var b3 = vec4(0.0);
    for (var c = 0u; c < s4; c++) {
        let x0 = x[r0 + c];
        let x1 = x[r1 + c];
        let x2 = x[r2 + c];
        let x3 = x[r3 + c];
        let w0 = weights4(lo.x, c);
        let w1 = weights4(lo.y, c);
        let w2 = weights4(lo.z, c);
        let w3 = weights4(lo.w, c);
        a0 += vec4(dot(x0, w0), dot(x0, w1), dot(x0, w2), dot(x0, w3));
        a1 += vec4(dot(x1, w0), dot(x1, w1), dot(x1, w2), dot(x1, w3));
        a2 += vec4(dot(x2, w0), dot(x2, w1), dot(x2, w2), dot(x2, w3));
        a3 += vec4(dot(x3, w0), dot(x3, w1), dot(x3, w2), dot(x3, w3));
        if wide {
            let w4 = weights4(hi.x, c);
            let w5 = weights4(hi.y, c);
            let w6 = weights4(hi.z, c);
            let w7 = weights4(hi.w, c);
            b0 += vec4(dot(x0, w4), dot(x0, w5), dot(x0, w6), dot(x0, w7));
            b1 += vec4(dot(x1, w4), dot(x1, w5), dot(x1, w6), dot(x1, w7));
            b2 += vec4(dot(x2, w4), dot(x2, w5), dot(x2, w6), dot(x2, w7));
            b3 += vec4(dot(x3, w4), dot(x3, w5), dot(x3, w6), dot(x3, w7));
        }
    }
    let n = min(TILE_OUTPUTS, o - k);
    let na = min(n, 4u);
    store_outputs(p0, row0, k, a0, na);
    if p0 + 1u < count {
        store_outputs(p1, row1, k, a1, na);
    }
    if p0 + 2u < count {
        store_outputs(p2, row2, k, a2, na);
    }
    if p0 + 3u < count {
        store_outputs(p3, row3, k, a3, na);
    }
    if n > 4u {
        store_outputs(p0, row0, k + 4u, b0, n - 4u);
        if p0 + 1u < count {
            store_outputs(p1, row1, k + 4u, b1, n - 4u);
        }
        if p0 + 2u < count {
            store_outputs(p2, row2, k + 4u, b2, n - 4u);
        }
        if p0 + 3u < count {
            store_outputs(p3, row3, k + 4u, b3, n - 4u);
        }
    }
}

@compute @workgroup_size(WG)
fn partial(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let o = dims.o;
    let d = dims.d;
    let s4 = dims.x_stride / 4u;
    let wide = TILE_OUTPUTS >= 8u;
    let out_tiles = (o + TILE_OUTPUTS - 1u) / TILE_OUTPUTS;
    let wid = wg.x + wg.y * groups.x;
    // The block and the output tile come from the workgroup alone, so the row indices and
    // δ are the same for every invocation (loaded once on a CPU implementation); the
    // invocations split the column groups.
    let u = wid % out_tiles;
    let block = wid / out_tiles;
    let first = block * dims.rows_per_block;
    if first >= chunk.count {
        return;
    }
    let last = min(first + dims.rows_per_block, chunk.count);
    let k = TILE_OUTPUTS * u;
    // Outputs past the last repeat it; their sums are not stored.
    let lo = min(vec4(k) + vec4(0u, 1u, 2u, 3u), vec4(o - 1u));
    let hi = min(vec4(k) + vec4(4u, 5u, 6u, 7u), vec4(o - 1u));
    let lo2 = min(vec4(k) + vec4(8u, 9u, 10u, 11u), vec4(o - 1u));
    let hi2 = min(vec4(k) + vec4(12u, 13u, 14u, 15u), vec4(o - 1u));
    let widest = TILE_OUTPUTS == 16u;
    let n = min(TILE_OUTPUTS, o - k);
    let out = (chunk.block_base + block) * partial_stride(dims.n_params);
    for (var c = lid; c <= s4; c += WG) {
        if c < s4 {
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
            for (var p = first; p < last; p++) {
                let xv = x[rows[chunk.row_offset + p] * s4 + c];
                let e = p * o;
                a0 += delta[e + lo.x] * xv;
                a1 += delta[e + lo.y] * xv;
                a2 += delta[e + lo.z] * xv;
                a3 += delta[e + lo.w] * xv;
                if wide {
                    a4 += delta[e + hi.x] * xv;
                    a5 += delta[e + hi.y] * xv;
                    a6 += delta[e + hi.z] * xv;
                    a7 += delta[e + hi.w] * xv;
                }
                if widest {
                    a8 += delta[e + lo2.x] * xv;
                    a9 += delta[e + lo2.y] * xv;
                    a10 += delta[e + lo2.z] * xv;
                    a11 += delta[e + lo2.w] * xv;
                    a12 += delta[e + hi2.x] * xv;
                    a13 += delta[e + hi2.y] * xv;
                    a14 += delta[e + hi2.z] * xv;
                    a15 += delta[e + hi2.w] * xv;
                }
            }
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
        } else {
            var b0 = vec4(0.0);
            var b1 = vec4(0.0);
            var b2 = vec4(0.0);
            var b3 = vec4(0.0);
            for (var p = first; p < last; p++) {
                let e = p * o;
                b0 += vec4(delta[e + lo.x], delta[e + lo.y], delta[e + lo.z], delta[e + lo.w]);
                if wide {
                    b1 += vec4(delta[e + hi.x], delta[e + hi.y], delta[e + hi.z], delta[e + hi.w]);
                }
                if widest {
                    b2 += vec4(delta[e + lo2.x], delta[e + lo2.y], delta[e + lo2.z], delta[e + lo2.w]);
                    b3 += vec4(delta[e + hi2.x], delta[e + hi2.y], delta[e + hi2.z], delta[e + hi2.w]);
                }
            }
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
    }
}
