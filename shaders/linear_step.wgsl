// Fused training step for one row block: forward, BCE and the block's gradient partial in one
// dispatch, so a block of X is read from memory once and re-read from cache.
//
// Workgroup b owns rows first = b·R .. last = min(first + R, count) of this chunk's batch
// segment (R = rows_per_block):
//   A. for each (p, k) in the block: z = x[row(p)] · W[k] + b[k], then the loss and δ exactly
//      as bce.wgsl; δ and the loss go to their chunk buffers (z is not kept: linear_forward
//      serves callers that want it). With few outputs (o·R·WG ≤ DOTS) invocation t owns the
//      vec4 column groups c = (tile·M + m)·WG + t, so neighbouring invocations read
//      neighbouring words of X while their weights stay in registers, and each pair then adds
//      its WG lane sums in lane order; with many outputs each invocation computes whole dot
//      products, vec4 by vec4;
//   B. storage barrier: the block's δ is visible to the whole workgroup;
//   C. invocation t again owns column groups c = (tile·M + m)·WG + t:
//      partials[(block_base + b)·S + k·d + j] = Σ_{p in block} δ[p, k]·x[row(p), j] (p
//      ascending), and Σ δ[p, k] for the biases (S: P rounded up to whole vec4).
// Every sum runs in a fixed order, so a step is bitwise reproducible.
//
// Bindings (group 0):
//   0 dims        storage, read    Dims: d, o, rows_per_block R, n_params P, x_stride
//   1 chunk       storage, dynamic ChunkStep: count, row_offset (into rows, or with
//                                  CONTIGUOUS the segment's first row), block_base, inv_count
//   2 x           storage, read    vec4<f32>[chunk_rows * x_stride / 4], rows zero-padded
//   3 rows        storage, read    u32[] chunk-local row indices
//   4 params      storage, read    f32[P]: W row-major, then b
//   5 y           storage, read    f32[chunk_rows * o]
//   6 pos_weight  storage, read    f32[o]
//   7 delta       storage, rw      f32[count * o]
//   8 loss        storage, rw      f32[count * o]
//   9 partials    storage, rw      f32[blocks * S]
// The layout also holds linear_step_rows.wgsl's X texture at 18, which shares it; not
// declared here.
//
// Invariants: x_stride is a multiple of 4 and X's padding columns are zero; one workgroup per
// row block, the grid folded into two dimensions past 65,535; control flow reaching the
// barriers is uniform across the workgroup (it depends only on the workgroup id and
// read-only arguments); ten storage bindings.

// Dims, ChunkStep, StepInfo, sigmoid and softplus_neg_abs come from common.wgsl, weights4
// from loads.wgsl, which the host (gpu::SHADERS) puts before this file.

override WG: u32 = 64u;
// The batch segment is the chunk's rows row_offset, row_offset + 1, …: no index reads.
override CONTIGUOUS: bool = false;

@group(0) @binding(0) var<storage, read> dims: Dims;
@group(0) @binding(1) var<storage, read> chunk: ChunkStep;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> rows: array<u32>;
@group(0) @binding(4) var<storage, read> params: array<f32>;
@group(0) @binding(5) var<storage, read> y: array<f32>;
@group(0) @binding(6) var<storage, read> pos_weight: array<f32>;
@group(0) @binding(7) var<storage, read_write> delta: array<f32>;
@group(0) @binding(8) var<storage, read_write> loss: array<f32>;
@group(0) @binding(9) var<storage, read_write> partials: array<f32>;

/// Column groups an invocation holds at once (weights in registers, X words per row).
const M: u32 = 4u;

/// Lane sums of the few-outputs path: (row, output, lane), o·R·WG ≤ DOTS.
const DOTS: u32 = 4096u;
var<workgroup> dots: array<f32, DOTS>;

/// The chunk-local row of batch position p.
fn row_of(p: u32) -> u32 {
    if CONTIGUOUS {
        return chunk.row_offset + p;
    }
    return rows[chunk.row_offset + p];
}

/// Loss and δ of batch position p, output k, from its dot product (bias not yet added).
fn bce(p: u32, k: u32, dot_product: f32) {
    let o = dims.o;
    let logit = dot_product + params[o * dims.d + k];
    let target_ = y[row_of(p) * o + k];
    let pw = pos_weight[k];
    let l = 1.0 + (pw - 1.0) * target_;
    let i = p * o + k;
    loss[i] = (1.0 - target_) * logit + l * (softplus_neg_abs(logit) + max(-logit, 0.0));
    delta[i] = (l * sigmoid(logit) - pw * target_) * chunk.inv_count;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let d = dims.d;
    let o = dims.o;
    let s4 = dims.x_stride / 4u;
    let block = wg.x + wg.y * groups.x;
    let first = block * dims.rows_per_block;
    if first >= chunk.count {
        return;
    }
    let last = min(first + dims.rows_per_block, chunk.count);
    let rows_here = last - first;
    let pairs = rows_here * o;

    // A. logits, loss and δ of the block.
    if o * dims.rows_per_block * WG <= DOTS {
        // Column groups in tiles of M·WG: invocation t owns c = (tile·M + m)·WG + t, keeps
        // those M weight vectors in registers and reads each row's M words of X.
        for (var k = 0u; k < o; k++) {
            for (var tile = 0u; tile * M * WG < s4; tile++) {
                var w: array<vec4<f32>, M>;
                for (var m = 0u; m < M; m++) {
                    let c = (tile * M + m) * WG + lid;
                    w[m] = vec4(0.0);
                    if c < s4 {
                        w[m] = weights4(k, c, dims.d);
                    }
                }
                for (var r = 0u; r < rows_here; r++) {
                    let x0 = row_of(first + r) * s4;
                    var acc = 0.0;
                    for (var m = 0u; m < M; m++) {
                        // Past the row's end the weights are zero; clamp to stay in the row.
                        let c = min((tile * M + m) * WG + lid, s4 - 1u);
                        acc += dot(x[x0 + c], w[m]);
                    }
                    let slot = (r * o + k) * WG + lid;
                    if tile == 0u {
                        dots[slot] = acc;
                    } else {
                        dots[slot] += acc;
                    }
                }
            }
        }
        workgroupBarrier();
        for (var e = lid; e < pairs; e += WG) {
            var acc = 0.0;
            for (var t = 0u; t < WG; t++) {
                acc += dots[e * WG + t];
            }
            bce(first + e / o, e % o, acc);
        }
    } else {
        for (var e = lid; e < pairs; e += WG) {
            let p = first + e / o;
            let k = e % o;
            let x0 = row_of(p) * s4;
            var acc = 0.0;
            for (var c = 0u; c < s4; c++) {
                acc += dot(x[x0 + c], weights4(k, c, dims.d));
            }
            bce(p, k, acc);
        }
    }

    // B. Every invocation's δ of the block is visible to every other.
    storageBarrier();
    workgroupBarrier();

    // C. The block's gradient partial: M column groups per invocation at a time, so each
    // row's δ and offset are loaded once for M words of X.
    let out = (chunk.block_base + block) * partial_stride(dims.n_params);
    for (var tile = 0u; tile * M * WG < s4; tile++) {
        for (var k = 0u; k < o; k++) {
            var acc: array<vec4<f32>, M>;
            for (var m = 0u; m < M; m++) {
                acc[m] = vec4(0.0);
            }
            for (var p = first; p < last; p++) {
                let x0 = row_of(p) * s4;
                let g = delta[p * o + k];
                for (var m = 0u; m < M; m++) {
                    let c = min((tile * M + m) * WG + lid, s4 - 1u);
                    acc[m] += g * x[x0 + c];
                }
            }
            for (var m = 0u; m < M; m++) {
                let c = (tile * M + m) * WG + lid;
                let q = out + k * d + 4u * c;
                for (var i = 0u; i < 4u && c < s4 && 4u * c + i < d; i++) {
                    partials[q + i] = acc[m][i];
                }
            }
        }
    }
    for (var k = lid; k < o; k += WG) {
        var acc = 0.0;
        for (var p = first; p < last; p++) {
            acc += delta[p * o + k];
        }
        partials[out + o * d + k] = acc;
    }
}
