//! The experts' products of the CPU backend ([`Backend::matmul_experts`]): a batch's (token,
//! slot) rows grouped by expert, each group's inputs quantized once, and every chosen expert's
//! rows run as one job of a single parallel region ([`CpuBackend::run_jobs`]), so a prompt reads
//! each expert's weights once. Expert weights are never repacked: they stay in the memory map,
//! and a token touches only the pages of the experts it uses.
//!
//! [`Backend::matmul_experts`]: crate::backend::Backend::matmul_experts

use super::backend::{CpuBackend, CpuTensor, CpuWeight, Out};
use super::dot::activation_type;
use super::matmul::{Activations, Input, Job, batched};
use crate::backend::host::activation_as_quantized;
use crate::backend::moe;

/// A weight tensor holds experts when its GGUF name says so (`ffn_gate_exps.weight`, …).
pub(super) fn is_experts(name: &str) -> bool {
    name.ends_with("_exps.weight")
}

/// What a weight's products read: activations quantized for its kernel (by activation type), or
/// rounded as ggml rounds them for its type; weights that read the same share one input.
fn reads(w: &CpuWeight) -> Result<Option<crate::quant::GgmlType>, crate::quant::GgmlType> {
    match w.kernel {
        Some(_) => Ok(activation_type(w.raw.ty)),
        None => Err(w.raw.ty),
    }
}

/// One expert's inputs, prepared for the weight's kernel (or rounded for the fallback).
enum Prepared {
    Quantized(Activations),
    Rounded(Vec<f32>),
}

impl CpuBackend {
    /// [`Backend::matmul_experts`] for each weight of `ws` (with its bias) into the output of
    /// the same index, all reading `x` routed by `ids`: the rows are grouped once, each expert's
    /// inputs are quantized once per activation type, and every chosen expert's rows of every
    /// weight run as the jobs of one parallel region.
    ///
    /// [`Backend::matmul_experts`]: crate::backend::Backend::matmul_experts
    pub(super) fn experts(
        &self,
        x: &CpuTensor,
        ws: &[&CpuWeight],
        biases: &[Option<&CpuWeight>],
        n_expert: usize,
        ids: &CpuTensor,
        outs: &mut [&mut CpuTensor],
    ) {
        assert!(
            !ws.is_empty() && ws.len() == outs.len() && ws.len() == biases.len(),
            "matmul_experts: one bias and one output per weight"
        );
        let shapes: Vec<moe::ExpertShape> = ws
            .iter()
            .zip(biases)
            .zip(outs.iter())
            .map(|((w, bias), out)| {
                moe::check_experts(
                    (x.rows, x.cols),
                    (w.raw.rows, w.raw.cols),
                    bias.map(|b| (b.raw.rows, b.raw.cols)),
                    n_expert,
                    (ids.rows, ids.cols),
                    (out.rows, out.cols),
                )
            })
            .collect();
        // The grouping depends only on the ids and the input's rows, the same for every weight.
        let groups = moe::group_by_expert(ids, &shapes[0]);
        // Per group: the expert, its output rows, and its inputs prepared for each weight (an
        // index into `inputs`, shared by weights whose kernels read the same activation type).
        let mut inputs: Vec<Prepared> = Vec::new();
        let mut prepared: Vec<(usize, Vec<usize>, Vec<usize>)> = Vec::new();
        for (e, pairs) in groups {
            let mut xs = Vec::with_capacity(pairs.len() * x.cols);
            for &(input, _) in &pairs {
                xs.extend_from_slice(x.row(input));
            }
            let mut of_weight = Vec::with_capacity(ws.len());
            for (i, w) in ws.iter().enumerate() {
                let raw = &w.raw;
                if let Some(j) = ws[..i].iter().position(|v| reads(v) == reads(w)) {
                    of_weight.push(of_weight[j]);
                    continue;
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
                of_weight.push(inputs.len());
                inputs.push(input);
            }
            prepared.push((e, pairs.into_iter().map(|(_, o)| o).collect(), of_weight));
        }
        let os: Vec<Out<f32>> = outs.iter_mut().map(|o| Out::new(&mut o.data)).collect();
        let mut jobs: Vec<Job<'_>> = Vec::with_capacity(prepared.len() * ws.len());
        for (i, (w, shape)) in ws.iter().zip(&shapes).enumerate() {
            for (e, out_rows, of_weight) in &prepared {
                jobs.push(Job {
                    w,
                    input: match &inputs[of_weight[i]] {
                        Prepared::Quantized(a) => Input::Quantized(a),
                        Prepared::Rounded(v) => Input::Rounded(v),
                    },
                    rows: e * shape.rows..(e + 1) * shape.rows,
                    out: os[i],
                    out_rows: Some(out_rows),
                });
            }
        }
        let most = prepared.iter().map(|p| p.1.len()).max().unwrap_or(0);
        self.run_jobs(&jobs, most);
        for ((bias, shape), out) in biases.iter().zip(&shapes).zip(outs.iter_mut()) {
            let Some(b) = bias else { continue };
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
