// Linear backward: the gradient of the loss with respect to [W | b] as a deterministic
// two-stage reduction over the batch rows (fixed order, no atomics, no subgroups).
//
//   gW[k, j] = Σ_p δ[p, k] · x[row(p), j]        gb[k] = Σ_p δ[p, k]
//
// Stage `partial`/`partial_tile` (one dispatch per chunk): the sums over rows
// block·R .. min((block+1)·R, count) of the chunk, in ascending order, written to
// partials[(block_base + block) · S + q] (S = P rounded up to whole vec4, common.wgsl's
// `partial_stride`). q < o·d is W[k = q / d, j = q % d]; q ≥ o·d is b[q − o·d], the sums of
// a column of ones (column d). A workgroup takes one block and a tile of outputs × columns,
// each invocation four consecutive columns (a vec4 of X) of one output (`partial`, few
// outputs) or of four outputs (`partial_tile`, OUT_LANES lanes along the outputs, the rows'
// X staged in workgroup memory for all of them). The block's δ and row indices are staged in
// workgroup memory a pass of rows at a time.
// Stage `total` (one dispatch per step): grad[q] = Σ_blocks partials[b · S + q], b ascending.
//
// Bindings (group 0):
//   0 dims      storage, read    Dims: d, o, rows_per_block R, n_params P = o·d + o, x_stride
//   1 chunk     storage, dynamic ChunkStep                          (partial)
//   2 x         storage, read    vec4<f32>[chunk_rows * x_stride / 4] (partial)
//   3 rows      storage, read    u32[] chunk-local row indices       (partial)
//   4 delta     storage, read    f32[count * o]                      (partial)
//   5 partials  storage, rw      f32[blocks * S]
//   6 grad      storage, rw      f32[P]                              (total)
//   7 info      storage, dynamic StepInfo: blocks written this step   (total)
//
// Invariants: the same shapes and the same batch give the same bits on the same adapter;
// x_stride is a multiple of 4 and X's padding columns are zero; workgroup w of the
// linearised grid takes block w / (output tiles · column tiles), then its output tile, then
// its column tile; whole workgroups past the last return before any barrier.

// Dims, ChunkStep, StepInfo, sigmoid and softplus_neg_abs come from common.wgsl, which the
// host (gpu::SHADERS) puts before this file.

override WG: u32 = 64u;
// `partial_tile`: lanes along the outputs (4 or 8).
override OUT_LANES: u32 = 8u;

// Rows `partial_tile` stages per pass.
const PASS_ROWS: u32 = 16u;
// The most vec4 columns a `partial_tile` workgroup takes (WG / OUT_LANES at OUT_LANES = 4).
const MAX_TILE_COLUMNS: u32 = 16u;
// The most outputs a `partial_tile` workgroup takes (4 · OUT_LANES at OUT_LANES = 8).
const MAX_TILE_OUTPUTS: u32 = 32u;

@group(0) @binding(0) var<storage, read> dims: Dims;
@group(0) @binding(1) var<storage, read> chunk: ChunkStep;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> rows: array<u32>;
@group(0) @binding(4) var<storage, read> delta: array<f32>;
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;

@group(0) @binding(7) var<storage, read> info: StepInfo;
@group(0) @binding(6) var<storage, read_write> grad: array<f32>;

// One pass's δ: `partial` one output's per row, `partial_tile` ds[i · MAX_TILE_OUTPUTS + q].
var<workgroup> ds: array<f32, PASS_ROWS * MAX_TILE_OUTPUTS>;
// One pass's rows' first vec4 in x.
var<workgroup> row_base: array<u32, WG>;
// `partial_tile`: one pass's rows of the tile's columns, xs[i · MAX_TILE_COLUMNS + c].
var<workgroup> xs: array<vec4<f32>, PASS_ROWS * MAX_TILE_COLUMNS>;

// Columns 4g .. 4g + 3 of row `base`: X's, and 1 in column d (the bias'), 0 past it.
fn columns(base: u32, g: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if g < dims.x_stride / 4u {
        v = x[base + g];
    }
    let ones = vec4<u32>(4u * g) + vec4<u32>(0u, 1u, 2u, 3u) == vec4<u32>(dims.d);
    return v + select(vec4<f32>(0.0), vec4<f32>(1.0), ones);
}

// Output k's sums over columns 4g .. 4g + 3 into the block's partials (those of columns up
// to d).
fn store_columns(block: u32, k: u32, g: u32, acc: vec4<f32>) {
    if k >= dims.o {
        return;
    }
    let out = (chunk.block_base + block) * partial_stride(dims.n_params);
    for (var i = 0u; i < 4u; i++) {
        let j = 4u * g + i;
        if j < dims.d {
            partials[out + k * dims.d + j] = acc[i];
        } else if j == dims.d {
            partials[out + dims.o * dims.d + k] = acc[i];
        }
    }
}

@compute @workgroup_size(WG)
fn partial(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Columns 0 ..= d in vec4 groups, WG groups per workgroup.
    let column_tiles = (dims.d / 4u + WG) / WG;
    let tiles = dims.o * column_tiles;
    let wid = wg.x + wg.y * groups.x;
    let block = wid / tiles;
    let first = block * dims.rows_per_block;
    if first >= chunk.count {
        return;
    }
    let k = (wid % tiles) / column_tiles;
    let g = (wid % column_tiles) * WG + lid;
    let last = min(first + dims.rows_per_block, chunk.count);
    var acc = vec4<f32>(0.0);
    for (var p0 = first; p0 < last; p0 += WG) {
        workgroupBarrier();
        let p = p0 + lid;
        if p < last {
            ds[lid] = delta[p * dims.o + k];
            row_base[lid] = rows[chunk.row_offset + p] * (dims.x_stride / 4u);
        }
        workgroupBarrier();
        let n = min(WG, last - p0);
        for (var i = 0u; i < n; i++) {
            acc += ds[i] * columns(row_base[i], g);
        }
    }
    store_columns(block, k, g, acc);
}

@compute @workgroup_size(WG)
fn partial_tile(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tile_columns = WG / OUT_LANES;
    let tile_outputs = 4u * OUT_LANES;
    let column_tiles = (dims.d / 4u + tile_columns) / tile_columns;
    let tiles = ((dims.o + tile_outputs - 1u) / tile_outputs) * column_tiles;
    let wid = wg.x + wg.y * groups.x;
    let block = wid / tiles;
    let first = block * dims.rows_per_block;
    if first >= chunk.count {
        return;
    }
    let o0 = ((wid % tiles) / column_tiles) * tile_outputs;
    let g0 = (wid % column_tiles) * tile_columns;
    // This invocation's column group g0 + lc and outputs o0 + 4·lo .. o0 + 4·lo + 3.
    let lc = lid % tile_columns;
    let lo = lid / tile_columns;
    let last = min(first + dims.rows_per_block, chunk.count);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var p0 = first; p0 < last; p0 += PASS_ROWS) {
        let n = min(PASS_ROWS, last - p0);
        workgroupBarrier();
        if lid < n {
            row_base[lid] = rows[chunk.row_offset + p0 + lid] * (dims.x_stride / 4u);
        }
        for (var e = lid; e < PASS_ROWS * tile_outputs; e += WG) {
            let i = e / tile_outputs;
            let k = o0 + e % tile_outputs;
            var v = 0.0;
            if i < n && k < dims.o {
                v = delta[(p0 + i) * dims.o + k];
            }
            ds[i * MAX_TILE_OUTPUTS + e % tile_outputs] = v;
        }
        workgroupBarrier();
        for (var e = lid; e < n * tile_columns; e += WG) {
            let i = e / tile_columns;
            xs[i * MAX_TILE_COLUMNS + e % tile_columns] = columns(row_base[i], g0 + e % tile_columns);
        }
        workgroupBarrier();
        for (var i = 0u; i < n; i++) {
            let v = xs[i * MAX_TILE_COLUMNS + lc];
            let s = i * MAX_TILE_OUTPUTS + 4u * lo;
            a0 += ds[s] * v;
            a1 += ds[s + 1u] * v;
            a2 += ds[s + 2u] * v;
            a3 += ds[s + 3u] * v;
        }
    }
    let g = g0 + lc;
    store_columns(block, o0 + 4u * lo, g, a0);
    store_columns(block, o0 + 4u * lo + 1u, g, a1);
    store_columns(block, o0 + 4u * lo + 2u, g, a2);
    store_columns(block, o0 + 4u * lo + 3u, g, a3);
}

@compute @workgroup_size(WG)
fn total(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let q = (wg.x + wg.y * groups.x) * WG + lid;
    if q >= dims.n_params {
        return;
    }
    let stride = partial_stride(dims.n_params);
    var acc = 0.0;
    for (var b = 0u; b < info.blocks; b++) {
        acc += partials[b * stride + q];
    }
    grad[q] = acc;
}
