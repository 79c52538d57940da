//! Paged attention: keys and values stored as f16 pairs, then one of three kernel paths (see
//! `shaders/attention.wgsl`): a workgroup per (row, head) for decode, split over the KV length and
//! merged when the context is long; an invocation per (row, head) for prompts. Also RoPE, whose
//! angle table is recorded once per pass.

use std::sync::Arc;

use super::super::host::{check_attention, check_copy_kv, check_rope, rope_angles};
use super::super::{Attention, KvRows, Rope, RopeStyle};
use super::record::{Bind, Fold, RopeKey};
use super::{GpuBackend, GpuKv, GpuTensor, TILED_MIN_ROWS, u};

/// Decode attention splits a row's positions into at most this many spans (unless spans would
/// exceed `MAX_SPAN`).
const MAX_SPLITS: usize = 32;

/// Loop iterations the per-row prompt attention kernel may take per invocation (lavapipe stops an
/// invocation at 65,535).
const ROW_ITERATIONS: usize = 50_000;

/// Positions one workgroup of the split attention kernel covers at most: 16 tiles of 64 keys,
/// each a few hundred loop iterations per invocation.
const MAX_SPAN: usize = 1024;

/// `p(12)` when a layer has no attention sinks.
const NO_SINKS: u32 = u32::MAX;

/// Largest head the attention kernel holds (`MAX_HEAD` in attention.wgsl).
const MAX_HEAD: usize = 256;

impl GpuBackend {
    /// [`Backend::attention`], or [`Backend::attend`] where there are no `new` keys and values
    /// to store first.
    pub(super) fn record_attention(
        &self,
        q: &GpuTensor,
        new: Option<(&GpuTensor, &GpuTensor)>,
        kv: &GpuKv,
        rows: &KvRows<'_>,
        attn: &Attention<'_>,
        out: &mut GpuTensor,
    ) {
        let (hk, hv) = (attn.head_dim_k, attn.head_dim_v);
        let n = q.rows;
        let shape = |t: &GpuTensor| (t.rows, t.cols);
        check_attention(
            shape(q),
            new.map(|(k, v)| (shape(k), shape(v))),
            shape(out),
            (kv.k_dim, kv.v_dim, kv.capacity),
            rows,
            attn,
        );
        assert!(
            hk <= MAX_HEAD && hv <= MAX_HEAD,
            "attention: heads beyond {MAX_HEAD}"
        );
        // Row info (position, table offset) and the block tables, each table once per run of
        // rows that share it.
        let mut rec = self.rec();
        let mut info = Vec::with_capacity(2 * n);
        let mut last: Option<(&[u32], u32)> = None;
        for (t, &p) in rows.positions.iter().enumerate() {
            let table = rows.tables[t];
            let at = match last {
                Some((prev, at)) if prev == table => at,
                _ => rec.data(table),
            };
            last = Some((table, at));
            info.extend([p, at]);
        }
        let info_at = rec.data(&info);
        let sinks_at = match attn.sinks {
            Some(sinks) => rec.data(&sinks.iter().map(|s| s.to_bits()).collect::<Vec<_>>()),
            None => NO_SINKS,
        };
        drop(rec);
        let (kw, vw) = (kv.k_dim / 2, kv.v_dim / 2);
        let kern = &self.ctx.kernels;
        if let Some((k, v)) = new
            && !self.fold_store(k, v, kv, info_at, rows.block_size)
        {
            let store = [u(n), u(kw), u(vw), info_at, u(rows.block_size)];
            let binds = vec![
                k.bind(),
                v.bind(),
                Bind::Buf(kv.k.clone()),
                Bind::Buf(kv.v.clone()),
                Bind::Data,
            ];
            self.run_each(&kern.kv_store, binds, &store, n * kw.max(vw));
        }
        let params = [
            u(attn.n_head),
            u(attn.n_head / attn.n_kv_head),
            u(hk),
            u(hv),
            attn.scale.to_bits(),
            u(attn.window.unwrap_or(0)),
            u(rows.block_size),
            u(kw),
            u(vw),
            info_at,
            u(n),
            1, // splits (attend_part, attend_merge)
            sinks_at,
        ];
        let binds = vec![
            q.bind(),
            Bind::Buf(kv.k.clone()),
            Bind::Buf(kv.v.clone()),
            out.bind(),
            Bind::Data,
        ];
        // Decode over a long context: split each row's positions so that the GPU has work for
        // all its cores, then merge.
        let longest = rows
            .positions
            .iter()
            .map(|&p| match attn.window {
                Some(w) => (p as usize + 1).min(w),
                None => p as usize + 1,
            })
            .max()
            .unwrap_or(0);
        let splits = longest.div_ceil(self.ctx.split_keys).clamp(1, MAX_SPLITS);
        // Spans stay short enough for lavapipe's loop guard too (see below).
        let splits = splits.max(longest.div_ceil(MAX_SPAN)).min(MAX_SPLITS * 8);
        // The per-row prompt kernel loops over every visible key in one invocation; lavapipe ends
        // an invocation after 65,535 loop iterations (its infinite-loop guard), so long rows with
        // large heads go through the split kernels instead (spans of `split_keys`).
        let row_iterations = longest * (hk + hv) / 2 + hk + 2 * hv;
        if n > TILED_MIN_ROWS && row_iterations < ROW_ITERATIONS {
            let groups = n.div_ceil(64) * attn.n_head;
            self.run(&kern.attend_rows, binds, &params, groups);
        } else if splits == 1 {
            self.run(&kern.attend, binds, &params, n * attn.n_head);
        } else {
            let items = n * attn.n_head;
            let partial = self.scratch(items * splits, hv + 2);
            let mut params = params.to_vec();
            params[11] = u(splits);
            let binds = vec![
                q.bind(),
                Bind::Buf(kv.k.clone()),
                Bind::Buf(kv.v.clone()),
                partial.bind(),
                Bind::Data,
            ];
            self.run(&kern.attend_part, binds, &params, items * splits);
            let binds = vec![partial.bind(), out.bind(), Bind::Data];
            self.run_each(&kern.attend_merge, binds, &params, items * hv);
        }
    }

    /// Folds the store of the new keys `k` and values `v` into the last dispatch where that is
    /// the rotation of the queries and of these keys (`rope2`, same rows) and each head's
    /// rotated pairs are even in number (so a thread of `rope2_store` owns whole words of the
    /// cache); `false` (nothing recorded) otherwise.
    fn fold_store(
        &self,
        k: &GpuTensor,
        v: &GpuTensor,
        kv: &GpuKv,
        info_at: u32,
        block_size: usize,
    ) -> bool {
        let kern = &self.ctx.kernels;
        let mut rec = self.rec();
        let threads = rec.last().and_then(|(kernel, binds, last)| {
            let fits = Arc::ptr_eq(kernel, &kern.rope2)
                && matches!(&binds[2], Bind::Buf(b) if b == k.buf())
                && last[0] as usize == k.rows
                && last[6] as usize == k.cols
                && last[3] % 2 == 0
                && k.cols == kv.k_dim
                && v.cols == kv.v_dim;
            if !fits {
                return None;
            }
            let (rows, hd, pairs) = (k.rows, last[2] as usize, last[3] as usize);
            let q = rows * (last[1] as usize / hd) * pairs;
            let keys = rows * (k.cols / hd) * (pairs / 2 + (hd - 2 * pairs) / 2);
            Some(q + keys + rows * v.cols / 2)
        });
        let Some(threads) = threads else {
            return false;
        };
        rec.fold_into_last(Fold {
            kernel: &kern.rope2_store,
            extra: vec![v.bind(), Bind::Buf(kv.k.clone()), Bind::Buf(kv.v.clone())],
            params: &[(7, info_at), (8, u(block_size)), (9, u(kv.v_dim / 2))],
            groups: Some(u(threads.div_ceil(256))),
        });
        true
    }

    /// [`Backend::copy_kv`]: the keys' words, then the values'.
    pub(super) fn record_copy_kv(
        &self,
        src: &GpuKv,
        from: usize,
        dst: &mut GpuKv,
        to: usize,
        slots: usize,
    ) {
        let shape = |kv: &GpuKv| (kv.k_dim, kv.v_dim, kv.capacity);
        check_copy_kv(shape(src), from, shape(dst), to, slots);
        let kern = &self.ctx.kernels.kv_copy;
        for (s, d, dim) in [(&src.k, &dst.k, src.k_dim), (&src.v, &dst.v, src.v_dim)] {
            let words = dim / 2;
            let params = [u(slots * words), u(from * words), u(to * words)];
            let binds = vec![Bind::Buf(s.clone()), Bind::Buf(d.clone())];
            self.run_each(kern, binds, &params, slots * words);
        }
    }

    /// [`Backend::scale_rows`]: the queries' attention temperature, one factor per row.
    pub(super) fn record_scale_rows(&self, x: &mut GpuTensor, factors: &[f32]) {
        assert_eq!(factors.len(), x.rows, "scale_rows: one factor per row");
        let bits: Vec<u32> = factors.iter().map(|f| f.to_bits()).collect();
        let at = self.rec().data(&bits);
        let k = &self.ctx.kernels;
        let params = [u(x.len()), u(x.cols), at];
        self.run_each(&k.scale_rows, vec![x.bind(), Bind::Data], &params, x.len());
    }

    /// [`Backend::rope`], with the angle table recorded once per pass and key.
    pub(super) fn record_rope(&self, x: &mut GpuTensor, positions: &[u32], rope: &Rope<'_>) {
        check_rope((x.rows, x.cols), positions, rope);
        let pairs = rope.n_rot / 2;
        let key = RopeKey {
            positions: positions.to_vec(),
            base: rope.base.to_bits(),
            freq_scale: rope.freq_scale.to_bits(),
            pairs,
            yarn: rope.yarn.map(|y| y.bits()),
            factors: rope
                .freq_factors
                .map(|f| f.iter().map(|v| v.to_bits()).collect()),
            attn_factor: rope.attn_factor.to_bits(),
        };
        let mut rec = self.rec();
        let at = match rec.rope_table(&key) {
            Some(at) => at,
            None => {
                let table = rope_table(positions, rope);
                rec.add_rope_table(key, &table)
            }
        };
        drop(rec);
        let style = match rope.style {
            RopeStyle::Normal => 0,
            RopeStyle::Neox => 1,
        };
        let params = [u(x.rows), u(x.cols), u(rope.head_dim), u(pairs), style, at];
        let threads = x.rows * (x.cols / rope.head_dim) * pairs;
        let k = &self.ctx.kernels;
        // Right after the queries' rotation by the same table, the keys' joins its dispatch.
        let mut rec = self.rec();
        let earlier = rec.last().and_then(|(kernel, binds, last)| {
            let same = Arc::ptr_eq(kernel, &k.rope)
                && matches!(&binds[0], Bind::Buf(b) if b != x.buf())
                && last[0] == params[0]
                && last[2..6] == params[2..6];
            same.then(|| last[0] as usize * (last[1] / last[2]) as usize * pairs)
        });
        if let Some(earlier) = earlier {
            rec.fold_into_last(Fold {
                kernel: &k.rope2,
                extra: vec![x.bind()],
                params: &[(6, u(x.cols))],
                groups: Some(u((earlier + threads).div_ceil(256))),
            });
        }
        drop(rec);
        let folded = earlier.is_some();
        if !folded {
            self.run_each(&k.rope, vec![x.bind(), Bind::Data], &params, threads);
        }
    }
}

/// [`rope_angles`] as the shader reads it: per row and rotated pair, the bits of `cos`, `sin`.
fn rope_table(positions: &[u32], rope: &Rope<'_>) -> Vec<u32> {
    rope_angles(positions, rope)
        .into_iter()
        .flat_map(|(c, s)| [c.to_bits(), s.to_bits()])
        .collect()
}
