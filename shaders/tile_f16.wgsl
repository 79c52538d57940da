// The tiled matmul's tiles in f16 (`shader-f16`, when asked for with `--gpu-f16`): half the
// workgroup memory and half the bytes per tile read, as llama.cpp's GPU backends hold prompt
// activations in f16 (at some cost in agreement with its CPU results). Products and sums stay in
// f32, so nothing overflows or drifts over long rows; values beyond f16's range are clamped to
// it. The module starts with `enable f16;`.
alias TileScalar = f16;
alias Tile = vec4<TileScalar>;

const F16_MAX: f32 = 65504.0;

fn to_tile(v: vec4<f32>) -> Tile {
    return vec4<f16>(clamp(v, vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX)));
}

fn from_tile(t: Tile) -> vec4<f32> {
    return vec4<f32>(t);
}
