//! Picking rows on the GPU: gather (the logits' rows), scatter (a state written back), argmax
//! and top-k of each row (the only results read back during generation).

use super::super::BackendError;
use super::record::Bind;
use super::{GpuBackend, GpuTensor, u};
use crate::backend::Backend;

impl GpuBackend {
    pub(super) fn record_gather(&self, x: &GpuTensor, rows: &[u32], out: &mut GpuTensor) {
        assert_eq!(
            (out.rows, out.cols),
            (rows.len(), x.cols),
            "gather: output shape"
        );
        assert!(
            rows.iter().all(|&r| (r as usize) < x.rows),
            "gather: row out of range"
        );
        let at = self.rec().data(rows);
        let k = &self.ctx.kernels;
        let binds = vec![x.bind(), out.bind(), Bind::Data];
        self.run_each(&k.gather, binds, &[u(rows.len()), u(x.cols), at], out.len());
    }

    pub(super) fn record_scatter(&self, src: &GpuTensor, rows: &[u32], x: &mut GpuTensor) {
        assert_eq!(
            (src.rows, src.cols),
            (rows.len(), x.cols),
            "scatter: source shape"
        );
        assert!(
            rows.iter().all(|&r| (r as usize) < x.rows),
            "scatter: row out of range"
        );
        let at = self.rec().data(rows);
        let binds = vec![x.bind(), src.bind(), Bind::Data];
        let params = [u(rows.len()), u(x.cols), at];
        self.run_each(&self.ctx.kernels.scatter, binds, &params, src.len());
    }

    pub(super) fn record_argmax(&self, t: &GpuTensor) -> Result<Vec<u32>, BackendError> {
        if t.cols == 0 {
            return Ok(vec![0; t.rows]);
        }
        let ids = self.scratch(t.rows, 1);
        let k = &self.ctx.kernels;
        let binds = vec![t.bind(), ids.bind()];
        self.run(&k.argmax, binds, &[u(t.rows), u(t.cols)], t.rows);
        Ok(self.read(&ids)?.into_iter().map(f32::to_bits).collect())
    }

    pub(super) fn record_top_k(
        &self,
        t: &GpuTensor,
        k: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>, BackendError> {
        let k = k.min(t.cols);
        if k == 0 {
            return Ok(vec![Vec::new(); t.rows]);
        }
        // Room for ties with the k-th value; a row with more is selected again on the host.
        let cap = k + 64;
        let stride = 1 + 2 * cap;
        let out = self.tensor(t.rows, stride);
        let binds = vec![t.bind(), out.bind()];
        let params = [u(t.rows), u(t.cols), u(k), u(cap)];
        self.run(&self.ctx.kernels.top_k, binds, &params, t.rows);
        let words = self.read(&out)?;
        let mut whole = None;
        let mut rows = Vec::with_capacity(t.rows);
        for (r, w) in words.chunks_exact(stride).enumerate() {
            let found = w[0].to_bits() as usize;
            if found > cap {
                let all = match &mut whole {
                    Some(all) => all,
                    None => whole.insert(self.read(t)?),
                };
                rows.push(crate::sample::top_k(&all[r * t.cols..][..t.cols], k));
                continue;
            }
            let pairs = w[1..1 + 2 * found].chunks_exact(2);
            rows.push(pairs.map(|p| (p[0].to_bits(), p[1])).collect());
        }
        Ok(rows)
    }
}
