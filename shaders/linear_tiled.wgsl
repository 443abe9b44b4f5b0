// Forward pass and gradient partials for many outputs as small register-tiled GEMMs: each
// invocation owns a 4 × 4 tile, so one vec4 load of X feeds four outputs and one weight
// vector four rows. Same inputs, outputs and partials layout as linear_forward and
// linear_backward.partial (bce and the optimizers' block sums are shared); only the order of
// the additions inside a dot product differs (vec4 by vec4).
//
//   forward: invocation (row tile t, output tile u) computes, for p = 4t .. 4t + 3 < count and
//            k = 4u .. 4u + 3 < o,  z[p·o + k] = Σ_c dot(x[row(p), 4c .. 4c + 3], W[k, 4c ..]) + b[k]
//   partial: invocation (block, output tile u, column group c) sums, over the block's rows
//            p = block·R .. min(block·R + R, count) in ascending order,
//            W[k, 4c .. 4c + 3]:  δ[p, k] · x[row(p), 4c .. 4c + 3]   (c < x_stride / 4)
//            b[k]:                δ[p, k]                             (c = x_stride / 4)
//            and writes them to partials[(block_base + block) · P + …] as linear_backward does.
//
// Bindings (group 0):
//   0 dims      storage, read    Dims: d, o, rows_per_block R, n_params P, x_stride
//   1 chunk     storage, dynamic ChunkStep: count, row_offset, block_base
//   2 x         storage, read    vec4<f32>[chunk_rows * x_stride / 4], rows zero-padded
//   3 rows      storage, read    u32[] chunk-local row indices
//   4 params    storage, read    f32[P]: W row-major, then b                      (forward)
//   5 z         storage, rw      f32[count * o]                                   (forward)
//   6 delta     storage, read    f32[count * o]                                   (partial)
//   7 partials  storage, rw      f32[blocks * P]                                  (partial)
//
// Invariants: x_stride is a multiple of 4 and X's padding columns are zero; an invocation
// loops x_stride / 4 times (forward) or R times (partial), within llvmpipe's loop limit for
// the shapes the host sends here; the grid is 2-D only to pass 65,535 workgroups per
// dimension, so the invocation index is linearised and guarded.

// Dims, ChunkStep come from common.wgsl, which the host (gpu::SHADERS) puts before this file.

override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> dims: Dims;
@group(0) @binding(1) var<storage, read> chunk: ChunkStep;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> rows: array<u32>;
@group(0) @binding(4) var<storage, read> params: array<f32>;
@group(0) @binding(5) var<storage, read_write> z: array<f32>;
@group(0) @binding(6) var<storage, read> delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;

/// W[k, 4c .. 4c + 4], zero past column d.
fn weights4(k: u32, c: u32) -> vec4<f32> {
    let j = 4u * c;
    let base = k * dims.d + j;
    if j + 4u <= dims.d {
        return vec4(params[base], params[base + 1u], params[base + 2u], params[base + 3u]);
    }
    var w = vec4(0.0);
    for (var i = 0u; j + i < dims.d; i++) {
        w[i] = params[base + i];
    }
    return w;
}

@compute @workgroup_size(WG)
fn forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let o = dims.o;
    let out_tiles = (o + 3u) / 4u;
    let id = (wg.x + wg.y * groups.x) * WG + lid;
    let t = id / out_tiles;
    let u = id % out_tiles;
    if 4u * t >= chunk.count {
        return;
    }
    let s4 = dims.x_stride / 4u;
    // Rows and outputs past the end repeat the last one; their sums are not stored.
    var x0: array<u32, 4>;
    var ks: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        x0[i] = rows[chunk.row_offset + min(4u * t + i, chunk.count - 1u)] * s4;
        ks[i] = min(4u * u + i, o - 1u);
    }
    var acc: array<vec4<f32>, 4>;
    for (var c = 0u; c < s4; c++) {
        let w0 = weights4(ks[0], c);
        let w1 = weights4(ks[1], c);
        let w2 = weights4(ks[2], c);
        let w3 = weights4(ks[3], c);
        for (var i = 0u; i < 4u; i++) {
            let xv = x[x0[i] + c];
            acc[i] += vec4(dot(xv, w0), dot(xv, w1), dot(xv, w2), dot(xv, w3));
        }
    }
    for (var i = 0u; i < 4u && 4u * t + i < chunk.count; i++) {
        for (var j = 0u; j < 4u && 4u * u + j < o; j++) {
            let k = 4u * u + j;
            z[(4u * t + i) * o + k] = acc[i][j] + params[o * dims.d + k];
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
    let s4 = dims.x_stride / 4u;
    let tasks = ((o + 3u) / 4u) * (s4 + 1u);
    let id = (wg.x + wg.y * groups.x) * WG + lid;
    let block = id / tasks;
    let task = id % tasks;
    let u = task / (s4 + 1u);
    let c = task % (s4 + 1u);
    let first = block * dims.rows_per_block;
    if first >= chunk.count {
        return;
    }
    let last = min(first + dims.rows_per_block, chunk.count);
    var acc: array<vec4<f32>, 4>;
    var ks: array<u32, 4>;
    for (var j = 0u; j < 4u; j++) {
        ks[j] = min(4u * u + j, o - 1u);
    }
    if c < s4 {
        for (var p = first; p < last; p++) {
            let xv = x[rows[chunk.row_offset + p] * s4 + c];
            let e = p * o;
            acc[0] += delta[e + ks[0]] * xv;
            acc[1] += delta[e + ks[1]] * xv;
            acc[2] += delta[e + ks[2]] * xv;
            acc[3] += delta[e + ks[3]] * xv;
        }
    } else {
        for (var p = first; p < last; p++) {
            let e = p * o;
            acc[0].x += delta[e + ks[0]];
            acc[1].x += delta[e + ks[1]];
            acc[2].x += delta[e + ks[2]];
            acc[3].x += delta[e + ks[3]];
        }
    }
    let out = (chunk.block_base + block) * dims.n_params;
    for (var j = 0u; j < 4u && 4u * u + j < o; j++) {
        let k = 4u * u + j;
        if c < s4 {
            for (var i = 0u; i < 4u && 4u * c + i < dims.d; i++) {
                partials[out + k * dims.d + 4u * c + i] = acc[j][i];
            }
        } else {
            partials[out + o * dims.d + k] = acc[j].x;
        }
    }
}
