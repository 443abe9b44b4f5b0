// GEMM probe: Z = X·Wᵀ (n×o from X n×d and W o×d) with 16×16 tiles staged in workgroup
// memory, the textbook GPU kernel. `bilevel bench` measures the many-outputs step (S3)
// against the faster of this and linear_tiled.forward's register tiles (on lavapipe those
// are ~8× faster than this); not part of training.
//
// Bindings (group 0):
//   0 dims    uniform          GemmDims: n, d, o, x_stride (a uniform, as in probe_read.wgsl)
//   1 x       storage, read    f32[n * x_stride]
//   2 w       storage, read    f32[o * d]
//   3 z       storage, rw      f32[n * o]
//
// Invariants: workgroup (16, 16) computes the tile rows 16·wg.y.., outputs 16·wg.x..; edges
// are zero-padded in the tiles, so any n, d, o work.

const TILE: u32 = 16u;

struct GemmDims {
    n: u32,
    d: u32,
    o: u32,
    // Floats from one row of X to the next.
    x_stride: u32,
}

@group(0) @binding(0) var<uniform> dims: GemmDims;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> z: array<f32>;

var<workgroup> x_tile: array<array<f32, 16>, 16>;
var<workgroup> w_tile: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wg.y * TILE + lid.y;
    let out = wg.x * TILE + lid.x;
    var acc = 0.0;
    for (var j0 = 0u; j0 < dims.d; j0 += TILE) {
        let jx = j0 + lid.x;
        let xr = wg.y * TILE + lid.y;
        x_tile[lid.y][lid.x] = select(0.0, x[xr * dims.x_stride + jx], xr < dims.n && jx < dims.d);
        let wr = wg.x * TILE + lid.y;
        w_tile[lid.y][lid.x] = select(0.0, w[wr * dims.d + jx], wr < dims.o && jx < dims.d);
        workgroupBarrier();
        for (var j = 0u; j < TILE; j++) {
            acc += x_tile[lid.y][j] * w_tile[lid.x][j];
        }
        workgroupBarrier();
    }
    if row < dims.n && out < dims.o {
        z[row * dims.o + out] = acc;
    }
}
