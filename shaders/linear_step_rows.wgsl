// Fused training step for one output, holding each row in registers: forward, BCE and the
// block's gradient partial with one read of X.
//
// The workgroup is one subgroup: WG is the adapter's smallest subgroup size, so a pipeline
// given wider subgroups runs it as one partly filled subgroup (lanes 0 .. WG − 1, the lane
// probe's check). Invocation (lane) t owns the vec4 column groups c = m·WG + t,
// m < COLUMN_GROUPS (the count the host unrolls, below), of every row; workgroup b owns rows
// first = b·R .. last = min(first + R, count) of this chunk's batch segment (R =
// rows_per_block). For each row p in order (four rows at a time with QUAD, else two, whose loads
// and reductions then overlap, with the rows' indices and targets loaded once per WG rows,
// one per lane, and shuffled out):
//   A. invocation t loads its column groups of x[row(p)] into registers and sums their dot
//      product with its weights (also in registers); a butterfly of shuffles over the rows
//      taken together (subgroupAdd for a block's odd last row) gives the row's logit;
//   B. every invocation computes δ and the loss of the row its sum is (exactly as
//      bce.wgsl); lane q writes those of the iteration's row q (only with ROW_OUTPUTS, which
//      training steps turn off) and hands its δ out to every lane;
//   C. invocation t adds δ·x to its gradient accumulators, still from registers, row by row.
// Then partials[(block_base + b)·S + j] = Σ_{p in block} δ[p]·x[row(p), j] (p ascending; S =
// P rounded up to whole vec4) and the bias partial Σ δ[p]. Every sum runs in a fixed order, so
// a step is reproducible; the logits' lane order (a butterfly, or subgroupAdd's, the
// adapter's, for a block's odd last row) differs from linear_step's, so logits may differ from
// it in the last bits. `probe` (for `bilevel bench`, at the end) reads the same rows and only
// sums them.
//
// `main_folded` is `main` with the previous step's Adam update in front, instead of adam.wgsl
// in a dispatch of its own between the steps: every workgroup sums the previous step's
// partials and updates every parameter it holds (exactly as adam.wgsl, in the same order, so
// the results are the same), and steps with the new weights; workgroup 0 also stores them.
// Since every workgroup reads the parameters and moments workgroup 0 writes, the host keeps
// two sets of them and of the partials and binds them in turns: a step reads one set and
// writes the other. It pays where a dispatch costs about what the update every workgroup
// repeats costs, as for steps of a few row blocks (docs/kernel-notes.md).
//
// The column groups are unrolled by the host (gpu::rows_step_source): the lines between
// `// #unroll m` and `// #end` are repeated for m = 0, 1, …, COLUMN_GROUPS − 1, with the name
// `m` replaced by the group's number and names ending in `_m` by names ending in it (`x_m` →
// `x_0`, `x_1`, …), so this file is WGSL only after that. WGSL has no unrolled loops, and
// function-scope arrays stay in memory on some drivers (docs/kernel-notes.md).
//
// Bindings (group 0), the same as linear_step.wgsl:
//   0 dims        storage, read    Dims: d, o = 1, rows_per_block R, n_params P, x_stride
//   1 chunk       storage, dynamic ChunkStep: count, row_offset (into rows, or with
//                                  CONTIGUOUS the segment's first row), block_base, inv_count
//   2 x           storage, read    vec4<f32>[chunk_rows * x_stride / 4], rows zero-padded
//   3 rows        storage, read    u32[] chunk-local row indices
//   4 params      storage, read    f32[P]: W (d), then b
//   5 y           storage, read    f32[chunk_rows]
//   6 pos_weight  storage, read    f32[1]
//   7 delta       storage, rw      f32[count]
//   8 loss        storage, rw      f32[count]
//   9 partials    storage, rw      vec4<f32>[blocks * S / 4]
//  18 x_texture   storage texture, read  X's words again (loads.wgsl, which declares it and
//                                  the X_TEXTURE overrides)
// and `main_folded`'s own (the previous step's update):
//  10 adam_cfg    storage, read    AdamConfig (amsgrad off)
//  11 info        storage, dynamic StepInfo of the previous step: t, blocks, step_size, bc2_sqrt
//  12 partials_in storage, read    vec4<f32>[blocks * S / 4]: the previous step's partials
//  13 m_in        storage, read    vec4<f32>[≥ x_stride / 4]: Adam's first moment, then padding
//  14 v_in        storage, read    vec4<f32>[≥ x_stride / 4]: the second moment, then padding
//  15 params_out  storage, rw      vec4<f32>[P / 4 rounded up]: the updated parameters
//  16 m_out       storage, rw      like m_in
//  17 v_out       storage, rw      like v_in
//
// Invariants: o = 1; x_stride / 4 = COLUMN_GROUPS·WG (the host pads rows with zeros to whole
// subgroups of vec4, so no invocation reads past its row: no clamp or select on the index in
// the loop); WG is a power of two of at least 2, no larger than any subgroup the adapter may
// give the pipeline (the host's condition for this path); one workgroup per row block, the grid
// folded into two dimensions past 65,535. `main_folded`: every parameter is updated (no mask),
// the buffers bound at 4, 13 and 14 differ from those at 15–17, and 12 from 9; the partials
// and moments read hold whole vec4 up to x_stride / 4 past a block's start (what padding
// columns read there is dropped).

// Dims, ChunkStep, sigmoid and softplus_neg_abs come from common.wgsl, load_x and weights4
// from loads.wgsl, which the host (gpu::SHADERS) puts before this file.

override WG: u32 = 8u;
// The batch segment is the chunk's rows row_offset, row_offset + 1, …: no index reads.
override CONTIGUOUS: bool = false;
// Whether the step writes each row's loss and δ: the checks and the diagnostics read them,
// the training steps between checks do not, and skip the loss's exp and log and two stores
// per row.
override ROW_OUTPUTS: bool = true;
// Four rows per iteration, their four logits in one butterfly (the host sets it for subgroups
// of at least 4): more loads in flight, fewer reductions per row (docs/kernel-notes.md).
override QUAD: bool = false;
// The column groups whose gradient the step sums (bit m: group m, features 4·m·WG ..
// 4·(m + 1)·WG − 1); the others' partials stay zero. A phase that trains a feature range
// (the local phase) needs few: a group left out costs its loads and dot product only, not its
// δ·x sums nor the registers that keep its words from the dot product to them. All groups by default, and always with `main_folded`.
override GRAD_GROUPS: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read> dims: Dims;
@group(0) @binding(1) var<storage, read> chunk: ChunkStep;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> rows: array<u32>;
@group(0) @binding(4) var<storage, read> params: array<f32>;
@group(0) @binding(5) var<storage, read> y: array<f32>;
@group(0) @binding(6) var<storage, read> pos_weight: array<f32>;
@group(0) @binding(7) var<storage, read_write> delta: array<f32>;
@group(0) @binding(8) var<storage, read_write> loss: array<f32>;
@group(0) @binding(9) var<storage, read_write> partials: array<vec4<f32>>;
// Only `main_folded`'s:
@group(0) @binding(10) var<storage, read> adam_cfg: AdamConfig;
@group(0) @binding(11) var<storage, read> info: StepInfo;
@group(0) @binding(12) var<storage, read> partials_in: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read> m_in: array<vec4<f32>>;
@group(0) @binding(14) var<storage, read> v_in: array<vec4<f32>>;
@group(0) @binding(15) var<storage, read_write> params_out: array<vec4<f32>>;
@group(0) @binding(16) var<storage, read_write> m_out: array<vec4<f32>>;
@group(0) @binding(17) var<storage, read_write> v_out: array<vec4<f32>>;
/// The chunk-local row of batch position p.
fn row_of(p: u32) -> u32 {
    if CONTIGUOUS {
        return chunk.row_offset + p;
    }
    return rows[chunk.row_offset + p];
}

/// The row of batch position p + lane, or of the block's last position past it: lane lane's
/// share of the next WG positions, which `main` and `probe` shuffle out pair by
/// pair.
fn row_for_lane(p: u32, rows: vec2<u32>, lane: u32) -> u32 {
    return row_of(min(p + lane, rows.y - 1u));
}

/// Loss and δ of batch position p from its logit and target, as bce.wgsl, with the
/// positive weight `pw` and 1 / count `inv`; the first invocation stores them (with
/// ROW_OUTPUTS). Returns δ.
fn bce(p: u32, target_: f32, logit: f32, store: bool, pw: f32, inv: f32) -> f32 {
    let l = 1.0 + (pw - 1.0) * target_;
    let g = (l * sigmoid(logit) - pw * target_) * inv;
    if ROW_OUTPUTS && store {
        loss[p] = (1.0 - target_) * logit + l * (softplus_neg_abs(logit) + max(-logit, 0.0));
        delta[p] = g;
    }
    return g;
}

/// This invocation's gradient partial for column group c, `v`, stored from vec4 `out4` on
/// (the columns below d).
fn store4(out4: u32, c: u32, v: vec4<f32>) {
    if 4u * c + 4u <= dims.d {
        partials[out4 + c] = v;
        return;
    }
    for (var i = 0u; i < 4u && 4u * c + i < dims.d; i++) {
        partials[out4 + c][i] = v[i];
    }
}

/// Loads a word from each 64-byte line of the rows of batch positions p + WG .. p + 2·WG − 1
/// (lane t the row of p + WG + t, or the block's last), which the subgroup reads next, and
/// returns their sum, only to keep the loads: indexed rows scatter over X, and eight rows at a
/// time, one a lane, put eight lines in flight where reading a row across the lanes puts two
/// (docs/kernel-notes.md). Contiguous segments skip it: the hardware prefetcher follows them.
fn touch_ahead(p: u32, rows: vec2<u32>, lane: u32, s4: u32) -> vec4<f32> {
    var sum = vec4(0.0);
    if !CONTIGUOUS {
        let base = row_for_lane(p + WG, rows, lane) * s4;
        for (var k = 0u; k < s4; k += 4u) {
            sum += load_x(base + k);
        }
    }
    return sum;
}

/// Whether the step sums column group m's gradient (`GRAD_GROUPS`); a constant once the
/// pipeline's overrides are set, so a group left out compiles to nothing.
fn sums_group(m: u32) -> bool {
    return (GRAD_GROUPS & (1u << m)) != 0u;
}

/// The block's first and last batch positions (first ≥ count: nothing to do).
fn block_rows(block: u32) -> vec2<u32> {
    let first = block * chunk.rows_per_block;
    return vec2(first, min(first + chunk.rows_per_block, chunk.count));
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let block = wg.x + wg.y * groups.x;
    let rows = block_rows(block);
    // Uniform across the subgroup: every invocation returns or none does.
    if rows.x >= chunk.count {
        return;
    }
    // Read once per block, not per row, and before the weights: a driver may not hoist a
    // storage load even at an address uniform across the subgroup (docs/kernel-notes.md).
    let s4 = dims.x_stride / 4u;
    let bias = params[dims.d];
    let pw = pos_weight[0];
    let inv = chunk.inv_count;
    // #unroll m
    let w_m = weights4(0u, m * WG + lane, dims.d);
    // #end
    rows_block(
        block,
        rows,
        lane,
        s4,
        pw,
        inv,
        bias,
        // #unroll m
        w_m,
        // #end
    );
}

// `main` with the previous step's Adam update folded in (see the header).
@compute @workgroup_size(WG)
fn main_folded(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let block = wg.x + wg.y * groups.x;
    let rows = block_rows(block);
    if rows.x >= chunk.count {
        return;
    }
    let store = block == 0u;
    let s4 = dims.x_stride / 4u;
    let pw = pos_weight[0];
    let inv = chunk.inv_count;
    // Loaded once each, as in `main`, not per parameter.
    let cfg = adam_cfg;
    let step = vec2(info.step_size, info.bc2_sqrt);
    let d = dims.d;
    let stride4 = partial_stride(dims.n_params) / 4u;
    let blocks = info.blocks;
    // The sums of the partials in adam.wgsl's order (blocks ascending), all in one loop and
    // a vec4 at a time: four scalar loads, each behind a test for the row's end, cost 47 k
    // instructions more per S4 step.
    // #unroll m
    var g_m = vec4(0.0);
    // #end
    var g_bias = 0.0;
    for (var b = 0u; b < blocks; b++) {
        let base = b * stride4;
        // #unroll m
        g_m += partials_in[base + m * WG + lane];
        // #end
        g_bias += partials_in[base + d / 4u][d % 4u];
    }
    rows_block(
        block,
        rows,
        lane,
        s4,
        pw,
        inv,
        adam_bias(cfg, step, d, g_bias, store && lane == 0u),
        // #unroll m
        adam4(cfg, step, d, m * WG + lane, g_m, store),
        // #end
    );
}

/// The bias after Adam's step with gradient g (adam.wgsl's `main`), stored with `store`.
fn adam_bias(cfg: AdamConfig, step: vec2<f32>, d: u32, g: f32, store: bool) -> f32 {
    let c = d / 4u;
    let i = d % 4u;
    let u = adam_update(cfg, step.x, step.y, params[d], g, m_in[c][i], v_in[c][i], 0.0);
    if store {
        params_out[c][i] = u.p;
        m_out[c][i] = u.m;
        v_out[c][i] = u.v;
    }
    return u.p;
}

/// W[4c .. 4c + 4] after Adam's step with the gradients g (adam.wgsl's `main`), zero past
/// column d, stored with `store`. Past d the moments read are another parameter's or
/// padding, and their results are dropped.
fn adam4(cfg: AdamConfig, step: vec2<f32>, d: u32, c: u32, g: vec4<f32>, store: bool) -> vec4<f32> {
    let p = weights4(0u, c, d);
    let m = m_in[c];
    let v = v_in[c];
    let x = adam_update(cfg, step.x, step.y, p.x, g.x, m.x, v.x, 0.0);
    let y = adam_update(cfg, step.x, step.y, p.y, g.y, m.y, v.y, 0.0);
    let z = adam_update(cfg, step.x, step.y, p.z, g.z, m.z, v.z, 0.0);
    let w = adam_update(cfg, step.x, step.y, p.w, g.w, m.w, v.w, 0.0);
    let j = 4u * c;
    let inside = vec4(j, j + 1u, j + 2u, j + 3u) < vec4(d);
    let p_new = select(vec4(0.0), vec4(x.p, y.p, z.p, w.p), inside);
    if store {
        let m_new = vec4(x.m, y.m, z.m, w.m);
        let v_new = vec4(x.v, y.v, z.v, w.v);
        if j + 4u <= d {
            params_out[c] = p_new;
            m_out[c] = m_new;
            v_out[c] = v_new;
        } else {
            for (var i = 0u; j + i < d; i++) {
                params_out[c][i] = p_new[i];
                m_out[c][i] = m_new[i];
                v_out[c][i] = v_new[i];
            }
        }
    }
    return p_new;
}

/// The step of `main` for the block's rows, with x_stride / 4 `s4`, pos_weight `pw`, 1 / count
/// `inv`, the weights (one vec4 per column group) and the bias.
fn rows_block(
    block: u32,
    rows: vec2<u32>,
    lane: u32,
    s4: u32,
    pw: f32,
    inv: f32,
    bias: f32,
    // #unroll m
    w_m: vec4<f32>,
    // #end
) {
    // #unroll m
    var acc_m = vec4(0.0);
    // #end
    var bias_acc = 0.0;
    var p = rows.x;
    var lane_row = 0u;
    var lane_target = 0.0;
    var touched = vec4(0.0);
    if QUAD {
        for (; p + 3u < rows.y; p += 4u) {
            // As the pairs below, four rows at a time: lanes 4i + q end with row q's sum.
            let j = (p - rows.x) % WG;
            if j == 0u {
                lane_row = row_for_lane(p, rows, lane);
                lane_target = y[lane_row];
                touched += touch_ahead(p, rows, lane, s4);
            }
            let base_a = subgroupShuffle(lane_row, j) * s4;
            let base_b = subgroupShuffle(lane_row, j + 1u) * s4;
            let base_c = subgroupShuffle(lane_row, j + 2u) * s4;
            let base_d = subgroupShuffle(lane_row, j + 3u) * s4;
            var dot_a = vec4(0.0);
            var dot_b = vec4(0.0);
            var dot_c = vec4(0.0);
            var dot_d = vec4(0.0);
            // #unroll m
            let xa_m = load_x(base_a + m * WG + lane);
            let xb_m = load_x(base_b + m * WG + lane);
            let xc_m = load_x(base_c + m * WG + lane);
            let xd_m = load_x(base_d + m * WG + lane);
            dot_a += xa_m * w_m;
            dot_b += xb_m * w_m;
            dot_c += xc_m * w_m;
            dot_d += xd_m * w_m;
            // #end
            let sum_a = dot_a.x + dot_a.y + dot_a.z + dot_a.w;
            let sum_b = dot_b.x + dot_b.y + dot_b.z + dot_b.w;
            let sum_c = dot_c.x + dot_c.y + dot_c.z + dot_c.w;
            let sum_d = dot_d.x + dot_d.y + dot_d.z + dot_d.w;
            // Odd lanes keep rows b and d, even lanes a and c; then lanes with bit 1 set
            // keep c or d, the others a or b.
            let odd = (lane & 1u) == 1u;
            let ab = select(sum_a, sum_b, odd) + subgroupShuffleXor(select(sum_b, sum_a, odd), 1u);
            let cd = select(sum_c, sum_d, odd) + subgroupShuffleXor(select(sum_d, sum_c, odd), 1u);
            let high = (lane & 2u) == 2u;
            var sum = select(ab, cd, high) + subgroupShuffleXor(select(cd, ab, high), 2u);
            for (var k = 4u; k < WG; k *= 2u) {
                sum += subgroupShuffleXor(sum, k);
            }
            let q = lane & 3u;
            let target_ = subgroupShuffle(lane_target, j + q);
            let g = bce(p + q, target_, sum + bias, lane < 4u, pw, inv);
            let g_a = subgroupBroadcast(g, 0u);
            let g_b = subgroupBroadcast(g, 1u);
            let g_c = subgroupBroadcast(g, 2u);
            let g_d = subgroupBroadcast(g, 3u);
            // #unroll m
            if sums_group(m) {
                acc_m = (((acc_m + g_a * xa_m) + g_b * xb_m) + g_c * xc_m) + g_d * xd_m;
            }
            // #end
            bias_acc = (((bias_acc + g_a) + g_b) + g_c) + g_d;
        }
    }
    for (; p + 1u < rows.y; p += 2u) {
        // Every WG positions, lane t loads the row and target of the t-th; each pair
        // takes its two from lanes j and j + 1 (j even: WG is a power of two, at least
        // 2): one load per lane instead of one per row; a shuffle costs next to nothing.
        let j = (p - rows.x) % WG;
        if j == 0u {
            lane_row = row_for_lane(p, rows, lane);
            lane_target = y[lane_row];
            touched += touch_ahead(p, rows, lane, s4);
        }
        let base_a = subgroupShuffle(lane_row, j) * s4;
        let base_b = subgroupShuffle(lane_row, j + 1u) * s4;
        // Both rows' loads interleaved, so that they are in flight together.
        var dot_a = vec4(0.0);
        var dot_b = vec4(0.0);
        // #unroll m
        let xa_m = load_x(base_a + m * WG + lane);
        let xb_m = load_x(base_b + m * WG + lane);
        dot_a += xa_m * w_m;
        dot_b += xb_m * w_m;
        // #end
        // Both rows' logits in one butterfly of shuffles: even lanes sum row a's lane sums,
        // odd lanes row b's, then every lane computes its row's δ (one sigmoid for two rows)
        // and lanes 0 and 1 hand theirs out (cheaper than two subgroupAdds and two σ).
        // A lane and its partner add the same two values in swapped order, so every lane of
        // a row ends with the same sum, in an order fixed by WG alone.
        let odd = lane & 1u;
        let sum_a = dot_a.x + dot_a.y + dot_a.z + dot_a.w;
        let sum_b = dot_b.x + dot_b.y + dot_b.z + dot_b.w;
        let mine = select(sum_a, sum_b, odd == 1u);
        var sum = mine + subgroupShuffleXor(select(sum_b, sum_a, odd == 1u), 1u);
        for (var k = 2u; k < WG; k *= 2u) {
            sum += subgroupShuffleXor(sum, k);
        }
        let target_ = subgroupShuffle(lane_target, j + odd);
        let g = bce(p + odd, target_, sum + bias, lane < 2u, pw, inv);
        let g_a = subgroupBroadcast(g, 0u);
        let g_b = subgroupBroadcast(g, 1u);
        // #unroll m
        if sums_group(m) {
            acc_m = (acc_m + g_a * xa_m) + g_b * xb_m;
        }
        // #end
        bias_acc = (bias_acc + g_a) + g_b;
    }
    // The block's last row of an odd count.
    if p < rows.y {
        let row = row_of(p);
        let base = row * s4;
        var dot4 = vec4(0.0);
        // #unroll m
        let x_m = load_x(base + m * WG + lane);
        dot4 += x_m * w_m;
        // #end
        let logit = subgroupAdd(dot4.x + dot4.y + dot4.z + dot4.w) + bias;
        let g = bce(p, y[row], logit, lane == 0u, pw, inv);
        // #unroll m
        if sums_group(m) {
            acc_m += g * x_m;
        }
        // #end
        bias_acc += g;
    }
    // A block's partials start on a vec4 (common.wgsl's partial_stride).
    let out4 = (chunk.block_base + block) * partial_stride(dims.n_params) / 4u;
    // #unroll m
    store4(out4, m * WG + lane, acc_m);
    // #end
    if lane == 0u {
        partials[out4 + dims.d / 4u][dims.d % 4u] = bias_acc;
    }
    // Never true (the host's d is at least 1): keeps touch_ahead's loads without a store.
    if dims.d == 0u {
        partials[out4] = touched;
    }
}

// Bandwidth probe for one batch (not part of training): reads the block's rows as the step
// does (same rows, lanes and unrolled column groups) and sums them, nothing else. `bilevel
// bench` times an epoch of it, one dispatch per batch like the steps, so that the step's cost
// over it is what the step adds to reading its rows. Two rows per iteration, or four with
// QUAD, as the step: that reads indexed batches faster than one row at a time
// (docs/kernel-notes.md), and the probe should be the fastest read we know.
@compute @workgroup_size(WG)
fn probe(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let block = wg.x + wg.y * groups.x;
    let rows = block_rows(block);
    if rows.x >= chunk.count {
        return;
    }
    let s4 = dims.x_stride / 4u;
    var acc = vec4(0.0);
    var p = rows.x;
    var lane_row = 0u;
    if QUAD {
        for (; p + 3u < rows.y; p += 4u) {
            let j = (p - rows.x) % WG;
            if j == 0u {
                lane_row = row_for_lane(p, rows, lane);
                acc += touch_ahead(p, rows, lane, s4);
            }
            let base_a = subgroupShuffle(lane_row, j) * s4;
            let base_b = subgroupShuffle(lane_row, j + 1u) * s4;
            let base_c = subgroupShuffle(lane_row, j + 2u) * s4;
            let base_d = subgroupShuffle(lane_row, j + 3u) * s4;
            // #unroll m
            let ab_m = load_x(base_a + m * WG + lane) + load_x(base_b + m * WG + lane);
            acc += ab_m + (load_x(base_c + m * WG + lane) + load_x(base_d + m * WG + lane));
            // #end
        }
    }
    for (; p + 1u < rows.y; p += 2u) {
        let j = (p - rows.x) % WG;
        if j == 0u {
            lane_row = row_for_lane(p, rows, lane);
            acc += touch_ahead(p, rows, lane, s4);
        }
        let base_a = subgroupShuffle(lane_row, j) * s4;
        let base_b = subgroupShuffle(lane_row, j + 1u) * s4;
        // #unroll m
        acc += load_x(base_a + m * WG + lane) + load_x(base_b + m * WG + lane);
        // #end
    }
    if p < rows.y {
        let base = row_of(p) * s4;
        // #unroll m
        acc += load_x(base + m * WG + lane);
        // #end
    }
    let s = acc.x + acc.y + acc.z + acc.w;
    if s == 1.0e38 {
        // Never true for real data; a conditional store keeps the loads without a write per lane.
        partials[block / 4u][block % 4u] = s;
    }
}
