use std::sync::Arc;
use std::time::Instant;
use hearth_engine::backend::gpu::{GpuBackend, GpuOptions};
use hearth_engine::backend::{Attention, Backend, KvRows};
use hearth_engine::gguf::GgufFile;

fn main() {
    let b = GpuBackend::new(&GpuOptions { allow_software: true, ..Default::default() }).unwrap();
    let path = std::env::args().nth(1).unwrap();
    let file = Arc::new(GgufFile::open(&path).unwrap());
    let info = file.tensors().iter().find(|i| i.name == "blk.0.ffn_up.weight").unwrap().clone();
    let w = b.weight(&file, &info).unwrap();
    let (cols, rows) = (info.dims[0] as usize, info.dims[1] as usize);
    for n in [1usize, 256] {
        let x = b.tensor_from(n, cols, &vec![0.1; n * cols]);
        let mut y = b.tensor(n, rows);
        b.matmul(&x, &w, &mut y);
        b.finish().unwrap();
        let t = Instant::now();
        for _ in 0..5 { b.matmul(&x, &w, &mut y); }
        b.finish().unwrap();
        let s = t.elapsed().as_secs_f64() / 5.0;
        println!("matmul {rows}x{cols} n={n}: {:.2} ms ({:.2} GMAC/s)", s * 1e3, (rows * cols * n) as f64 / s / 1e9);
    }
    let n = 256;
    let a = Attention { n_head: 9, n_kv_head: 3, head_dim_k: 64, head_dim_v: 64, scale: 0.125, window: None };
    let mut kv = b.kv(256, 192, 192).unwrap();
    let q = b.tensor_from(n, 576, &vec![0.1; n * 576]);
    let k = b.tensor_from(n, 192, &vec![0.1; n * 192]);
    let v = b.tensor_from(n, 192, &vec![0.1; n * 192]);
    let mut o = b.tensor(n, 576);
    let table: Vec<u32> = (0..16).collect();
    let positions: Vec<u32> = (0..n as u32).collect();
    let tables: Vec<&[u32]> = vec![&table; n];
    let rows = KvRows { block_size: 16, positions: &positions, tables: &tables };
    b.attention(&q, &k, &v, &mut kv, &rows, &a, &mut o);
    b.finish().unwrap();
    let t = Instant::now();
    for _ in 0..3 { b.attention(&q, &k, &v, &mut kv, &rows, &a, &mut o); }
    b.finish().unwrap();
    println!("attention n=256: {:.2} ms", t.elapsed().as_secs_f64() / 3.0 * 1e3);
}
