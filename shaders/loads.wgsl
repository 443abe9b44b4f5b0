// The vec4 loads shared by the kernels that read X and the weights four columns at a time
// (linear_step, linear_step_rows, linear_tiled): gpu::SHADERS puts this file after common.wgsl
// and before those files (WGSL has no includes).
//
// Bindings: X's texture (binding 18) is declared here; the including kernel declares
// `dims: Dims`, `x: array<vec4<f32>>` (binding 2) and `params: array<f32>` (W row-major, o × d,
// then b). WGSL resolves module-scope names in any order, so this file can name them before
// they are declared.
//  18 x_texture   texture_storage_2d<rgba32float, read>  with X_TEXTURE the words of 2 as
//                                  texels, 2^X_TEXTURE_SHIFT to a texel row; without it a
//                                  1×1 stand-in, never read
//
// Invariants: W's columns past d read as zero, as X's padding columns are.

// Read X through the texture at binding 18, not the storage buffer at 2. The host sets it on
// CPU adapters: lavapipe loads a storage buffer's vec4 lane by lane, each word behind its own
// bounds test, and a texel of a storage texture with a few vector instructions in line
// (docs/kernel-notes.md).
override X_TEXTURE: bool = false;
// log2 of the texture's width in texels (the host's, from the adapter's limits).
override X_TEXTURE_SHIFT: u32 = 14u;

// X's chunk again, as a texture (with X_TEXTURE; otherwise a 1×1 stand-in): see `load_x`.
@group(0) @binding(18) var x_texture: texture_storage_2d<rgba32float, read>;

/// Vector word i of X's chunk (the binding at 2 indexed by i): from the texture with
/// X_TEXTURE, whose texel (i mod 2^X_TEXTURE_SHIFT, i >> X_TEXTURE_SHIFT) holds it.
fn load_x(i: u32) -> vec4<f32> {
    if X_TEXTURE {
        return textureLoad(x_texture, texel(i));
    }
    return x[i];
}

/// The texel of vector word i in a texture of X's layout: 2^X_TEXTURE_SHIFT words to a row.
fn texel(i: u32) -> vec2<u32> {
    let mask = (1u << X_TEXTURE_SHIFT) - 1u;
    return vec2(i & mask, i >> X_TEXTURE_SHIFT);
}

/// W[k, 4c .. 4c + 4], zero past column d (those X columns are zero padding); d = dims.d,
/// passed in because a CPU implementation (llvmpipe) does not hoist a storage load out of
/// a loop.
fn weights4(k: u32, c: u32, d: u32) -> vec4<f32> {
    let j = 4u * c;
    let base = k * d + j;
    if j + 4u <= d {
        return vec4(params[base], params[base + 1u], params[base + 2u], params[base + 3u]);
    }
    var w = vec4(0.0);
    for (var i = 0u; j + i < d; i++) {
        w[i] = params[base + i];
    }
    return w;
}
