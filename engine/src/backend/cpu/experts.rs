//! The experts' products of the CPU backend ([`Backend::matmul_experts`]): a batch's (token,
//! slot) rows grouped by expert, each group's inputs quantized once, and every chosen expert's
//! rows run as one job of a single parallel region ([`CpuBackend::run_jobs`]), so a prompt reads
//! each expert's weights once. Expert weights are never repacked: they stay in the memory map,
//! and a token touches only the pages of the experts it uses.
//!
//! [`Backend::matmul_experts`]: crate::backend::Backend::matmul_experts

use super::backend::{CpuBackend, CpuTensor, CpuWeight, Out};
use super::matmul::{Activations, Input, Job, batched};
use crate::backend::host::activation_as_quantized;
use crate::backend::moe;

/// A weight tensor holds experts when its GGUF name says so (`ffn_gate_exps.weight`, …).
pub(super) fn is_experts(name: &str) -> bool {
    name.ends_with("_exps.weight")
}

/// One expert's inputs, prepared for the weight's kernel (or rounded for the fallback).
enum Prepared {
    Quantized(Activations),
    Rounded(Vec<f32>),
}

impl CpuBackend {
    pub(super) fn experts(
        &self,
        x: &CpuTensor,
        w: &CpuWeight,
        bias: Option<&CpuWeight>,
        n_expert: usize,
        ids: &CpuTensor,
        out: &mut CpuTensor,
    ) {
        let raw = &w.raw;
        let shape = moe::check_experts(
            (x.rows, x.cols),
            (raw.rows, raw.cols),
            bias.map(|b| (b.raw.rows, b.raw.cols)),
            n_expert,
            (ids.rows, ids.cols),
            (out.rows, out.cols),
        );
        let groups = moe::group_by_expert(ids, &shape);
        let prepared: Vec<(usize, Vec<usize>, Prepared)> = groups
            .into_iter()
            .map(|(e, pairs)| {
                let mut xs = Vec::with_capacity(pairs.len() * x.cols);
                for &(input, _) in &pairs {
                    xs.extend_from_slice(x.row(input));
                }
                let input = match w.kernel {
                    Some(_) => {
                        let mut a = Activations::new(self, raw.ty, &xs, x.cols);
                        if batched(self.level, raw.ty, pairs.len()) {
                            a.prepare_batched(raw.ty);
                        }
                        Prepared::Quantized(a)
                    }
                    None => Prepared::Rounded(activation_as_quantized(raw.ty, &xs)),
                };
                (e, pairs.into_iter().map(|(_, o)| o).collect(), input)
            })
            .collect();
        let o = Out::new(&mut out.data);
        let jobs: Vec<Job<'_>> = prepared
            .iter()
            .map(|(e, out_rows, input)| Job {
                w,
                input: match input {
                    Prepared::Quantized(a) => Input::Quantized(a),
                    Prepared::Rounded(v) => Input::Rounded(v),
                },
                rows: e * shape.rows..(e + 1) * shape.rows,
                out: o,
                out_rows: Some(out_rows),
            })
            .collect();
        let most = prepared.iter().map(|p| p.1.len()).max().unwrap_or(0);
        self.run_jobs(&jobs, most);
        if let Some(b) = bias {
            let mut row = vec![0.0; shape.rows];
            for (e, out_rows, _) in &prepared {
                b.raw.dequant_row(*e, &mut row);
                for &r in out_rows {
                    for (d, &v) in out.data[r * shape.rows..][..shape.rows]
                        .iter_mut()
                        .zip(&row)
                    {
                        *d += v;
                    }
                }
            }
        }
    }
}
