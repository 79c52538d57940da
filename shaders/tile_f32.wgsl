// The tiled matmul's tiles in f32.
alias TileScalar = f32;
alias Tile = vec4<TileScalar>;

fn to_tile(v: vec4<f32>) -> Tile {
    return v;
}

fn from_tile(t: Tile) -> vec4<f32> {
    return t;
}
