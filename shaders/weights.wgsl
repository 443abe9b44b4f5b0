// Shared by the kernels that read the weights four columns at a time (linear_step,
// linear_step_rows, linear_tiled): gpu::SHADERS puts it after common.wgsl and before those
// files (WGSL has no includes).
//
// Bindings: none of its own. The including kernel declares `dims: Dims` and
// `params: array<f32>` (W row-major, o × d, then b); WGSL resolves module-scope names in any
// order, so this file can name them before they are declared.
//
// Invariants: W's columns past d read as zero, as X's padding columns are.

/// W[k, 4c .. 4c + 4], zero past column d (those X columns are zero padding).
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
