// Linear forward, the portable path: logits of one batch's rows that lie in one chunk of X,
// as workgroup-memory tiles (no subgroups, so every WebGPU implementation runs it).
//
//   z[p * o + k] = dot(x[rows[row_offset + p], :], W[k, :]) + b[k]    for p < count, k < o
//
// A workgroup computes a tile of rows × outputs. Over the features, K_TILE at a time, it
// stages the tile's rows of X (vec4 loads, consecutive lanes along a row) and its outputs'
// weights in workgroup memory, then each invocation adds its rows' × outputs' products. Each
// dot product runs in a fixed order, j ascending. Workgroup memory: 13.5 KiB of WebGPU's
// default 16.
//
// Entry points:
//   main   one row and one output per invocation: 64 rows × 1 output per workgroup (few
//          outputs; the grid repeats the rows for each output)
//   tile   4 rows × 4 consecutive outputs per invocation, OUT_LANES lanes along the outputs:
//          4·WG/OUT_LANES rows × 4·OUT_LANES outputs per workgroup (many outputs)
//
// Bindings (group 0):
//   0 dims    storage, read    Dims: d, o, x_stride (fixed for a run)
//   1 step    storage, dynamic ChunkStep: this dispatch's batch rows in the chunk
//   2 x       storage, read    vec4<f32>[chunk_rows * x_stride / 4], zero-padded rows
//   3 rows    storage, read    u32[], chunk-local row indices of every planned batch
//   4 params  storage, read    f32[o * d + o]: W row-major, then b
//   5 z       storage, rw      f32[count * o], batch-position-major
//
// Invariants: rows[row_offset .. row_offset + count] < chunk_rows; x_stride is a multiple of
// 4; workgroup w of the (2-D, linearised) grid takes row tile w / output_tiles and output
// tile w % output_tiles; whole workgroups past the last tile return before any barrier.

// Dims, ChunkStep and the helpers come from common.wgsl, which the host (gpu::SHADERS) puts
// before this file.

override WG: u32 = 64u;
// `tile`: lanes along the outputs (4 or 8: at most 64 rows, 32 outputs a tile).
override OUT_LANES: u32 = 8u;

// Features staged per pass (a multiple of 4).
const K_TILE: u32 = 32u;
const K_VEC4: u32 = 8u;
// A staged row in workgroup memory: K_VEC4 vec4 and one of padding, so that lanes reading
// consecutive rows hit different banks.
const ROW_VEC4: u32 = 9u;
// The most rows a tile stages: `main`'s WG and `tile`'s 4 · WG / OUT_LANES, at most 64.
const MAX_TILE_ROWS: u32 = 64u;
// The most outputs a tile stages (`tile` at OUT_LANES = 8).
const MAX_TILE_OUTPUTS: u32 = 32u;

@group(0) @binding(0) var<storage, read> dims: Dims;
@group(0) @binding(1) var<storage, read> step: ChunkStep;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> rows: array<u32>;
@group(0) @binding(4) var<storage, read> params: array<f32>;
@group(0) @binding(5) var<storage, read_write> z: array<f32>;

// The tile's rows of X for one pass, row-major at ROW_VEC4 vec4 per row.
var<workgroup> xs: array<vec4<f32>, MAX_TILE_ROWS * ROW_VEC4>;
// The tile's weights for one pass, feature-major: ws[c * MAX_TILE_OUTPUTS + output].
var<workgroup> ws: array<f32, K_TILE * MAX_TILE_OUTPUTS>;
// Each staged row's first vec4 in x, or NO_ROW past the batch.
var<workgroup> row_base: array<u32, MAX_TILE_ROWS>;

const NO_ROW: u32 = 0xffffffffu;

// Stages rows r0 .. r0 + tile_rows of the batch: their first vec4 in x.
fn stage_row_bases(lid: u32, r0: u32, tile_rows: u32) {
    for (var i = lid; i < tile_rows; i += WG) {
        let p = r0 + i;
        var base = NO_ROW;
        if p < step.count {
            base = rows[step.row_offset + p] * (dims.x_stride / 4u);
        }
        row_base[i] = base;
    }
}

// Stages features k0 .. k0 + K_TILE of the tile's rows (zeros past the batch; X's padding
// columns are zero).
fn stage_x(lid: u32, k0: u32, tile_rows: u32) {
    let c0 = k0 / 4u;
    for (var e = lid; e < tile_rows * K_VEC4; e += WG) {
        let r = e / K_VEC4;
        let c = e % K_VEC4;
        let base = row_base[r];
        var v = vec4<f32>(0.0);
        if base != NO_ROW && (c0 + c) * 4u < dims.x_stride {
            v = x[base + c0 + c];
        }
        xs[r * ROW_VEC4 + c] = v;
    }
}

// Stages features k0 .. k0 + K_TILE of outputs o0 .. o0 + tile_outputs' weights (zeros past
// d and o).
fn stage_w(lid: u32, k0: u32, o0: u32, tile_outputs: u32) {
    for (var e = lid; e < tile_outputs * K_TILE; e += WG) {
        let q = e / K_TILE;
        let c = e % K_TILE;
        let k = o0 + q;
        let j = k0 + c;
        var w = 0.0;
        if k < dims.o && j < dims.d {
            w = params[k * dims.d + j];
        }
        ws[c * MAX_TILE_OUTPUTS + q] = w;
    }
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let wid = wg.x + wg.y * groups.x;
    if wid >= ((step.count + WG - 1u) / WG) * dims.o {
        return;
    }
    let r0 = (wid / dims.o) * WG;
    let k = wid % dims.o;
    stage_row_bases(lid, r0, WG);
    var acc = 0.0;
    for (var k0 = 0u; k0 < dims.d; k0 += K_TILE) {
        workgroupBarrier();
        stage_x(lid, k0, WG);
        stage_w(lid, k0, k, 1u);
        workgroupBarrier();
        // The products in feature order; the padding past d adds exact zeros.
        for (var c = 0u; c < K_VEC4; c++) {
            let v = xs[lid * ROW_VEC4 + c];
            acc += v.x * ws[(4u * c) * MAX_TILE_OUTPUTS];
            acc += v.y * ws[(4u * c + 1u) * MAX_TILE_OUTPUTS];
            acc += v.z * ws[(4u * c + 2u) * MAX_TILE_OUTPUTS];
            acc += v.w * ws[(4u * c + 3u) * MAX_TILE_OUTPUTS];
        }
    }
    let p = r0 + lid;
    if p < step.count {
        z[p * dims.o + k] = acc + params[dims.o * dims.d + k];
    }
}

@compute @workgroup_size(WG)
fn tile(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row_lanes = WG / OUT_LANES;
    let tile_rows = 4u * row_lanes;
    let tile_outputs = 4u * OUT_LANES;
    let output_tiles = (dims.o + tile_outputs - 1u) / tile_outputs;
    let wid = wg.x + wg.y * groups.x;
    if wid >= ((step.count + tile_rows - 1u) / tile_rows) * output_tiles {
        return;
    }
    let r0 = (wid / output_tiles) * tile_rows;
    let o0 = (wid % output_tiles) * tile_outputs;
    // This invocation's rows lr + i·row_lanes (i < 4) and outputs 4·lo .. 4·lo + 3 of the
    // tile.
    let lr = lid % row_lanes;
    let lo = lid / row_lanes;
    stage_row_bases(lid, r0, tile_rows);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < dims.d; k0 += K_TILE) {
        workgroupBarrier();
        stage_x(lid, k0, tile_rows);
        stage_w(lid, k0, o0, tile_outputs);
        workgroupBarrier();
        for (var c = 0u; c < K_VEC4; c++) {
            let v0 = xs[lr * ROW_VEC4 + c];
            let v1 = xs[(lr + row_lanes) * ROW_VEC4 + c];
            let v2 = xs[(lr + 2u * row_lanes) * ROW_VEC4 + c];
            let v3 = xs[(lr + 3u * row_lanes) * ROW_VEC4 + c];
            // The weights of features 4c .. 4c + 3 for the invocation's four outputs.
            let wx = staged_weights(4u * c, lo);
            let wy = staged_weights(4u * c + 1u, lo);
            let wz = staged_weights(4u * c + 2u, lo);
            let ww = staged_weights(4u * c + 3u, lo);
            a0 += v0.x * wx;
            a0 += v0.y * wy;
            a0 += v0.z * wz;
            a0 += v0.w * ww;
            a1 += v1.x * wx;
            a1 += v1.y * wy;
            a1 += v1.z * wz;
            a1 += v1.w * ww;
            a2 += v2.x * wx;
            a2 += v2.y * wy;
            a2 += v2.z * wz;
            a2 += v2.w * ww;
            a3 += v3.x * wx;
            a3 += v3.y * wy;
            a3 += v3.z * wz;
            a3 += v3.w * ww;
        }
    }
    store_row(r0 + lr, o0 + 4u * lo, a0);
    store_row(r0 + lr + row_lanes, o0 + 4u * lo, a1);
    store_row(r0 + lr + 2u * row_lanes, o0 + 4u * lo, a2);
    store_row(r0 + lr + 3u * row_lanes, o0 + 4u * lo, a3);
}

// The staged weights of feature c for outputs 4·lo .. 4·lo + 3 of the tile.
fn staged_weights(c: u32, lo: u32) -> vec4<f32> {
    let w = c * MAX_TILE_OUTPUTS + 4u * lo;
    return vec4<f32>(ws[w], ws[w + 1u], ws[w + 2u], ws[w + 3u]);
}

// z of batch row p at outputs k .. k + 3 (those below o), with the biases added.
fn store_row(p: u32, k: u32, acc: vec4<f32>) {
    if p >= step.count {
        return;
    }
    let b = dims.o * dims.d;
    for (var i = 0u; i < 4u; i++) {
        if k + i < dims.o {
            z[p * dims.o + k + i] = acc[i] + params[b + k + i];
        }
    }
}
