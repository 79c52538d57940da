//! The model's weights by GGUF tensor name, each checked for its shape before the backend gets it.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

use crate::backend::Backend;
use crate::gguf::{GgufFile, TensorInfo};

use super::ModelError;
use super::config::Config;

/// One transformer block's weights. Optional ones exist only where the [`Config`] says so.
pub(crate) struct LayerWeights<B: Backend> {
    pub attn_norm: B::Weight,
    pub mixer: Mixer<B>,
    pub post_attn_norm: Option<B::Weight>,
    pub ffn_norm: B::Weight,
    pub ffn: Ffn<B>,
    pub post_ffn_norm: Option<B::Weight>,
    /// The whole residual stream is multiplied by this after the block (gemma4).
    pub output_scale: Option<f32>,
    /// The per-layer embedding's gate, projection and norm (gemma4's E2B/E4B).
    pub per_layer: Option<PerLayer<B>>,
}

/// What mixes the positions of a layer: attention against the KV cache, or a Gated DeltaNet with
/// a recurrent state (qwen35).
pub(crate) enum Mixer<B: Backend> {
    Attention(AttnWeights<B>),
    DeltaNet(DeltaWeights<B>),
}

/// An attention block's weights.
pub(crate) struct AttnWeights<B: Backend> {
    pub wq: B::Weight,
    /// `None` on a shared-KV layer (gemma4's E2B/E4B), which reads an earlier layer's cache.
    pub wk: Option<B::Weight>,
    /// `None` on a gemma4 global layer, whose values are its raw keys.
    pub wv: Option<B::Weight>,
    pub wo: B::Weight,
    pub bq: Option<B::Weight>,
    pub bk: Option<B::Weight>,
    pub bv: Option<B::Weight>,
    pub bo: Option<B::Weight>,
    /// Attention sinks (one logit per head), on the host: the attention op takes them as values.
    pub sinks: Option<Vec<f32>>,
    pub q_norm: Option<B::Weight>,
    pub k_norm: Option<B::Weight>,
    /// Ones: the weightless per-head RMS norm of the values (gemma4).
    pub v_norm: Option<B::Weight>,
    /// The output gate's projection (qwen35: the second half of each head's `attn_q` rows).
    pub gate: Option<B::Weight>,
}

/// A Gated DeltaNet block's weights (qwen35).
pub(crate) struct DeltaWeights<B: Backend> {
    /// Queries, keys and values (`attn_qkv`), the output gate `z` (`attn_gate`), and the
    /// per-value-head `beta` and `alpha` projections.
    pub qkv: B::Weight,
    pub z: B::Weight,
    pub beta: B::Weight,
    pub alpha: B::Weight,
    /// The convolution's taps as one vector (`kernel` per channel).
    pub conv: B::Weight,
    /// Per value head: `a` (negative) and the time-step bias, on the host.
    pub a: Vec<f32>,
    pub dt_bias: Vec<f32>,
    /// The gated output norm (per head) and the output projection.
    pub norm: B::Weight,
    pub out: B::Weight,
}

/// A layer's use of its per-layer embedding: `x += post_norm(proj(gelu(gate x) * e))`.
pub(crate) struct PerLayer<B: Backend> {
    pub gate: B::Weight,
    pub proj: B::Weight,
    pub post_norm: B::Weight,
}

/// The per-layer embeddings' inputs (gemma4's E2B/E4B): each layer `l` gets
/// `(rms(proj_l x0 / sqrt(d), norm) + table[token, l] * sqrt(width)) / sqrt(2)` with `x0` the
/// scaled token embedding.
pub(crate) struct PerLayerInput<B: Backend> {
    /// `per_layer_token_embd` seen as `vocab * layers` rows of one layer's width: token `t`'s
    /// row for layer `l` is `t * layers + l`.
    pub table: B::Weight,
    /// Rows `l * width ..` of `per_layer_model_proj`, one weight per layer.
    pub projections: Vec<B::Weight>,
    pub norm: B::Weight,
}

/// A layer's feed-forward block: a dense gated MLP, a mixture of experts, or both (gemma4's MoE
/// models: each output normed, then summed).
pub(crate) struct Ffn<B: Backend> {
    pub dense: Option<Dense<B>>,
    /// RMSNorm of the dense block's output where experts follow (gemma4's `post_ffw_norm_1`).
    pub dense_norm: Option<B::Weight>,
    pub experts: Option<Experts<B>>,
    /// A shared expert every token uses besides the routed ones, its output times
    /// `sigmoid(gate · x)` (qwen35moe).
    pub shared: Option<Shared<B>>,
}

/// A shared expert and its gate (a vector: one value per token).
pub(crate) struct Shared<B: Backend> {
    pub expert: Dense<B>,
    pub gate: B::Weight,
}

/// `down(act(gate x) * up x)`.
pub(crate) struct Dense<B: Backend> {
    pub gate: B::Weight,
    pub up: B::Weight,
    pub down: B::Weight,
}

/// The experts' gate and up projections: two stacked weights, or one whose expert rows hold the
/// gate rows then the up rows (gemma4's `ffn_gate_up_exps`).
pub(crate) enum GateUp<B: Backend> {
    Separate { gate: B::Weight, up: B::Weight },
    Fused(B::Weight),
}

/// A mixture-of-experts block: the router and the stacked experts (each `n_expert` matrices in
/// one weight, see [`crate::backend::Backend::matmul_experts`]), with optional biases, and
/// gemma4's own norms and scales.
pub(crate) struct Experts<B: Backend> {
    pub router: B::Weight,
    pub router_bias: Option<B::Weight>,
    /// The router reads `rms_norm(x) * router_norm` of the residual stream instead of the
    /// block's normed input (gemma4: `ffn_gate_inp.scale / sqrt(d)`).
    pub router_norm: Option<B::Weight>,
    /// The experts read `rms_norm(x) * input_norm` of the residual stream instead of the
    /// block's normed input (gemma4's `pre_ffw_norm_2`).
    pub input_norm: Option<B::Weight>,
    pub gate_up: GateUp<B>,
    pub down: B::Weight,
    pub gate_bias: Option<B::Weight>,
    pub up_bias: Option<B::Weight>,
    pub down_bias: Option<B::Weight>,
    /// Each expert's output is multiplied by its scale (gemma4's `ffn_down_exps.scale`).
    pub down_scale: Option<B::Weight>,
    /// RMSNorm of the weighted sum (gemma4's `post_ffw_norm_2`).
    pub output_norm: Option<B::Weight>,
}

/// All weights of a model.
pub(crate) struct Weights<B: Backend> {
    pub token_embd: B::Weight,
    pub layers: Vec<LayerWeights<B>>,
    pub output_norm: B::Weight,
    /// The output projection; `None` when it is tied to `token_embd`.
    pub output: Option<B::Weight>,
    /// RoPE frequency factors per rotated pair (`rope_freqs.weight`, Llama 3.1+; phi3's short
    /// LongRoPE factors), on the host.
    pub rope_freqs: Option<Vec<f32>>,
    /// phi3's long LongRoPE factors, for a context beyond `rope.scaling.original_context_length`.
    pub rope_freqs_long: Option<Vec<f32>>,
    pub per_layer_input: Option<PerLayerInput<B>>,
}

/// Loads tensors from one file, checking names and shapes.
struct Loader<'a, B: Backend> {
    backend: &'a B,
    file: &'a Arc<GgufFile>,
    /// Told the bytes of each tensor once it is loaded.
    progress: &'a dyn Fn(u64),
    /// The names of the tensors taken so far (every tensor of the file must be, at the end).
    used: RefCell<HashSet<String>>,
}

impl<B: Backend> Loader<'_, B> {
    fn label(&self) -> String {
        self.file.label().to_string()
    }

    /// The tensor `name`, checked to have GGUF dims `dims`; `None` if absent.
    fn info(&self, name: &str, dims: &[usize]) -> Result<Option<&TensorInfo>, ModelError> {
        let Some(info) = self.file.header().tensor_info(name) else {
            return Ok(None);
        };
        let expected: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        if info.dims != expected {
            return Err(ModelError::ShapeMismatch {
                file: self.label(),
                tensor: name.to_string(),
                expected,
                found: info.dims.clone(),
            });
        }
        Ok(Some(info))
    }

    /// [`Loader::info`] of a tensor the model cannot do without.
    fn required_info(&self, name: &str, dims: &[usize]) -> Result<&TensorInfo, ModelError> {
        self.info(name, dims)?
            .ok_or_else(|| ModelError::MissingTensor {
                file: self.label(),
                tensor: name.to_string(),
            })
    }

    /// `part` (tensor `name`'s bytes, or a row range of them, under the dims the backend sees)
    /// made a weight; its bytes counted and `name` marked used.
    fn take(&self, name: &str, part: &TensorInfo) -> Result<B::Weight, ModelError> {
        let weight =
            self.backend
                .weight(self.file, part)
                .map_err(|source| ModelError::Backend {
                    file: self.label(),
                    source,
                })?;
        (self.progress)(part.size);
        self.used.borrow_mut().insert(name.to_string());
        Ok(weight)
    }

    /// Tensors the forward pass multiplies by the same input, made weights together
    /// ([`Backend::weights`]: a backend may store them in one buffer and multiply them in one
    /// dispatch); each counted and marked used as [`Loader::take`] does.
    fn together<const N: usize>(
        &self,
        tensors: [(&str, &[usize]); N],
    ) -> Result<[B::Weight; N], ModelError> {
        let mut infos = Vec::with_capacity(N);
        for (name, dims) in tensors {
            infos.push(self.required_info(name, dims)?);
        }
        let weights =
            self.backend
                .weights(self.file, &infos)
                .map_err(|source| ModelError::Backend {
                    file: self.label(),
                    source,
                })?;
        for ((name, _), info) in tensors.iter().zip(&infos) {
            (self.progress)(info.size);
            self.used.borrow_mut().insert(name.to_string());
        }
        Ok(weights
            .try_into()
            .unwrap_or_else(|_| unreachable!("a backend makes one weight per tensor")))
    }

    /// The tensor `name` with GGUF dims `dims` (`[cols]` or `[cols, rows]`); `None` if absent.
    fn optional(&self, name: &str, dims: &[usize]) -> Result<Option<B::Weight>, ModelError> {
        match self.info(name, dims)? {
            Some(info) => self.take(name, info).map(Some),
            None => Ok(None),
        }
    }

    /// An expert tensor `name` of GGUF dims `[cols, rows, n_expert]`, as one weight of
    /// `n_expert * rows` rows (expert `e` is rows `e * rows ..`; the bytes are the same).
    fn experts(&self, name: &str, [cols, rows, n]: [usize; 3]) -> Result<B::Weight, ModelError> {
        let mut stacked = self.required_info(name, &[cols, rows, n])?.clone();
        stacked.dims = vec![cols as u64, (rows * n) as u64];
        self.take(name, &stacked)
    }

    /// The 2-D tensor `name` of GGUF dims `[cols, rows]` seen as `[cols / parts, rows * parts]`:
    /// each row split into `parts` rows of its own (the bytes are the same).
    fn split_rows(
        &self,
        name: &str,
        [cols, rows]: [usize; 2],
        parts: usize,
    ) -> Result<B::Weight, ModelError> {
        let mut split = self.required_info(name, &[cols, rows])?.clone();
        split.dims = vec![(cols / parts) as u64, (rows * parts) as u64];
        self.take(name, &split)
    }

    /// Rows `rows` of the 2-D tensor `name` (GGUF dims `[cols, total]`) as a weight of their own
    /// (the bytes are a contiguous slice of the tensor's): one part of a fused projection
    /// (phi3's `attn_qkv`, its gate and up in `ffn_up`).
    fn rows_of(
        &self,
        name: &str,
        [cols, total]: [usize; 2],
        rows: std::ops::Range<usize>,
    ) -> Result<B::Weight, ModelError> {
        let mut part = self.required_info(name, &[cols, total])?.clone();
        let row_bytes = part.size / total as u64;
        part.offset += rows.start as u64 * row_bytes;
        part.dims = vec![cols as u64, rows.len() as u64];
        part.size = rows.len() as u64 * row_bytes;
        self.take(name, &part)
    }

    /// The 1-D tensor `name` of `len` values, read into host memory.
    fn host_vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let info = self.required_info(name, &[len])?;
        let values = crate::quant::dequantize_to_vec(info.ty, self.file.tensor_data(info))
            .map_err(|e| ModelError::Backend {
                file: self.label(),
                source: crate::backend::BackendError::Device {
                    backend: "host",
                    message: format!("tensor '{name}': {e}"),
                },
            })?;
        (self.progress)(info.size);
        self.used.borrow_mut().insert(name.to_string());
        Ok(values)
    }

    /// The 1-D tensor `name` of `len` values, read into host memory; `None` if absent.
    fn optional_host_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>, ModelError> {
        match self.info(name, &[len])? {
            Some(_) => self.host_vector(name, len).map(Some),
            None => Ok(None),
        }
    }

    /// A weight the file does not hold but the model computes with (`values`, as F32), made
    /// through the same backend path as the file's own: a one-tensor GGUF in memory.
    fn derived(&self, name: &str, values: &[f32]) -> Result<B::Weight, ModelError> {
        let bytes = crate::gguf::GgufBuilder::new()
            .tensor(
                name,
                &[values.len() as u64],
                crate::quant::GgmlType::F32,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
            .build();
        let file = Arc::new(GgufFile::from_bytes(bytes, &self.label())?);
        let info = file.header().tensors[0].clone();
        self.backend
            .weight(&file, &info)
            .map_err(|source| ModelError::Backend {
                file: self.label(),
                source,
            })
    }

    fn required(&self, name: &str, dims: &[usize]) -> Result<B::Weight, ModelError> {
        self.optional(name, dims)?
            .ok_or_else(|| ModelError::MissingTensor {
                file: self.label(),
                tensor: name.to_string(),
            })
    }

    /// Layer `il`'s attention weights.
    fn attention(&self, c: &Config, il: usize) -> Result<AttnWeights<B>, ModelError> {
        let (d, shape) = (c.d_model, c.layer(il));
        let (q_dim, kv_k, kv_v) = (
            c.n_head * shape.head_dim_k,
            shape.n_kv_head * shape.head_dim_k,
            shape.n_kv_head * shape.head_dim_v,
        );
        let o_in = c.n_head * shape.head_dim_v;
        let qkv = [d, q_dim + kv_k + kv_v];
        let n = |s: &str| format!("blk.{il}.{s}");
        let own_kv = c.owns_kv(il);
        // Separate Q, K and V tensors, each required, are loaded together.
        let separate = !(c.fused_qkv || c.attn_output_gate || (c.v_norm && kv_k == kv_v));
        let (wq, gate, wk, wv) = if own_kv && separate {
            let [wq, wk, wv] = self.together([
                (&n("attn_q.weight"), &[d, q_dim]),
                (&n("attn_k.weight"), &[d, kv_k]),
                (&n("attn_v.weight"), &[d, kv_v]),
            ])?;
            (wq, None, Some(wk), Some(wv))
        } else {
            // qwen35: each head's query rows, then its output gate's.
            let (wq, gate) = match (c.fused_qkv, c.attn_output_gate) {
                (true, _) => (self.rows_of(&n("attn_qkv.weight"), qkv, 0..q_dim)?, None),
                (false, true) => {
                    let name = n("attn_q.weight");
                    let dims = [d, 2 * q_dim];
                    let hd = shape.head_dim_k;
                    (
                        self.row_groups(&name, dims, 2 * hd, 0..hd)?,
                        Some(self.row_groups(&name, dims, 2 * hd, hd..2 * hd)?),
                    )
                }
                (false, false) => (self.required(&n("attn_q.weight"), &[d, q_dim])?, None),
            };
            let wk = match c.fused_qkv {
                _ if !own_kv => None,
                true => Some(self.rows_of(&n("attn_qkv.weight"), qkv, q_dim..q_dim + kv_k)?),
                false => Some(self.required(&n("attn_k.weight"), &[d, kv_k])?),
            };
            let wv = match c.fused_qkv {
                _ if !own_kv => None,
                true => Some(self.rows_of(&n("attn_qkv.weight"), qkv, q_dim + kv_k..qkv[1])?),
                // gemma4's global layers take their values from the keys.
                false if c.v_norm && kv_k == kv_v => {
                    self.optional(&n("attn_v.weight"), &[d, kv_v])?
                }
                false => Some(self.required(&n("attn_v.weight"), &[d, kv_v])?),
            };
            (wq, gate, wk, wv)
        };
        Ok(AttnWeights {
            wq,
            gate,
            wk,
            wv,
            wo: self.required(&n("attn_output.weight"), &[o_in, d])?,
            bq: self.when(c.qkv_bias, &n("attn_q.bias"), &[q_dim])?,
            bk: self.when(c.qkv_bias, &n("attn_k.bias"), &[kv_k])?,
            bv: self.when(c.qkv_bias, &n("attn_v.bias"), &[kv_v])?,
            bo: self.when(c.out_bias, &n("attn_output.bias"), &[d])?,
            sinks: match c.attn_sinks {
                true => Some(self.host_vector(&n("attn_sinks.weight"), c.n_head)?),
                false => None,
            },
            q_norm: self.when(c.qk_norm, &n("attn_q_norm.weight"), &[shape.head_dim_k])?,
            k_norm: self.when(
                c.qk_norm && own_kv,
                &n("attn_k_norm.weight"),
                &[shape.head_dim_k],
            )?,
            v_norm: match c.v_norm && own_kv {
                true => Some(self.derived("v_norm", &vec![1.0; shape.head_dim_v])?),
                false => None,
            },
        })
    }

    /// Layer `il`'s Gated DeltaNet weights.
    fn delta_net(
        &self,
        c: &Config,
        il: usize,
        r: super::config::Recurrent,
    ) -> Result<DeltaWeights<B>, ModelError> {
        let d = c.d_model;
        let n = |s: &str| format!("blk.{il}.{s}");
        let (ch, inner) = (r.channels(), r.n_v * r.d);
        let conv = n("ssm_conv1d.weight");
        Ok(DeltaWeights {
            qkv: self.required(&n("attn_qkv.weight"), &[d, ch])?,
            z: self.required(&n("attn_gate.weight"), &[d, inner])?,
            beta: self.required(&n("ssm_beta.weight"), &[d, r.n_v])?,
            alpha: self.required(&n("ssm_alpha.weight"), &[d, r.n_v])?,
            // One vector of every tap (the GPU takes rows of multiples of 8 values).
            conv: {
                let mut whole = self.required_info(&conv, &[r.kernel, ch])?.clone();
                whole.dims = vec![(r.kernel * ch) as u64];
                self.take(&conv, &whole)?
            },
            a: self.host_vector(&n("ssm_a"), r.n_v)?,
            dt_bias: self.host_vector(&n("ssm_dt.bias"), r.n_v)?,
            norm: self.required(&n("ssm_norm.weight"), &[r.d])?,
            out: self.required(&n("ssm_out.weight"), &[inner, d])?,
        })
    }

    /// The rows of the 2-D tensor `name` (GGUF dims `[cols, total]`) whose index within each
    /// group of `group` rows falls in `pick`, copied into a weight of their own (qwen35's
    /// per-head query and gate rows of `attn_q`). The bytes are copied once at load; the file's
    /// rows are then never read.
    fn row_groups(
        &self,
        name: &str,
        [cols, total]: [usize; 2],
        group: usize,
        pick: std::ops::Range<usize>,
    ) -> Result<B::Weight, ModelError> {
        let info = self.required_info(name, &[cols, total])?.clone();
        let bytes = self.file.tensor_data(&info);
        let row = bytes.len() / total;
        let picked: Vec<u8> = (0..total)
            .filter(|r| pick.contains(&(r % group)))
            .flat_map(|r| &bytes[r * row..(r + 1) * row])
            .copied()
            .collect();
        let rows = picked.len() / row;
        let built = crate::gguf::GgufBuilder::new()
            .tensor(name, &[cols as u64, rows as u64], info.ty, picked)
            .build();
        let file = Arc::new(GgufFile::from_bytes(built, &self.label())?);
        let part = file.header().tensors[0].clone();
        let weight = self
            .backend
            .weight(&file, &part)
            .map_err(|source| ModelError::Backend {
                file: self.label(),
                source,
            })?;
        (self.progress)(part.size);
        self.used.borrow_mut().insert(name.to_string());
        Ok(weight)
    }

    /// Layer `il`'s feed-forward block: experts where the model has them, a dense block where
    /// the model has no experts or the layer has a dense block besides them (gemma4).
    fn ffn(&self, c: &Config, il: usize, d_ff: usize) -> Result<Ffn<B>, ModelError> {
        let n = |s: &str| format!("blk.{il}.{s}");
        let d = c.d_model;
        let has = |s: &str| self.file.header().tensor_info(&n(s)).is_some();
        let dense = if c.n_expert == 0 || has("ffn_down.weight") {
            let (f, up) = (d_ff, n("ffn_up.weight"));
            let [gate, up] = match c.fused_gate_up {
                true => [
                    self.rows_of(&up, [d, 2 * f], 0..f)?,
                    self.rows_of(&up, [d, 2 * f], f..2 * f)?,
                ],
                false => self.together([(&n("ffn_gate.weight"), &[d, f]), (&up, &[d, f])])?,
            };
            Some(Dense {
                gate,
                up,
                down: self.required(&n("ffn_down.weight"), &[f, d])?,
            })
        } else {
            None
        };
        if c.n_expert == 0 {
            return Ok(Ffn {
                dense,
                dense_norm: None,
                experts: None,
                shared: None,
            });
        }
        let (e, f) = (c.n_expert, c.d_ff_expert);
        let router_norm = match self.optional_host_vector(&n("ffn_gate_inp.scale"), d)? {
            Some(scale) => {
                let root = (d as f32).sqrt();
                let values: Vec<f32> = scale.iter().map(|s| s / root).collect();
                Some(self.derived("router_norm", &values)?)
            }
            None => None,
        };
        let fused = n("ffn_gate_up_exps.weight");
        let gate_up = match self.file.header().tensor_info(&fused) {
            Some(_) => GateUp::Fused(self.experts(&fused, [d, 2 * f, e])?),
            None => GateUp::Separate {
                gate: self.experts(&n("ffn_gate_exps.weight"), [d, f, e])?,
                up: self.experts(&n("ffn_up_exps.weight"), [d, f, e])?,
            },
        };
        let shared = match c.d_ff_shared {
            0 => None,
            f => Some(Shared {
                expert: Dense {
                    gate: self.required(&n("ffn_gate_shexp.weight"), &[d, f])?,
                    up: self.required(&n("ffn_up_shexp.weight"), &[d, f])?,
                    down: self.required(&n("ffn_down_shexp.weight"), &[f, d])?,
                },
                gate: self.required(&n("ffn_gate_inp_shexp.weight"), &[d])?,
            }),
        };
        Ok(Ffn {
            shared,
            dense_norm: match dense {
                Some(_) => self.optional(&n("post_ffw_norm_1.weight"), &[d])?,
                None => None,
            },
            dense,
            experts: Some(Experts {
                router: self.required(&n("ffn_gate_inp.weight"), &[d, e])?,
                router_bias: self.optional(&n("ffn_gate_inp.bias"), &[e])?,
                router_norm,
                input_norm: self.optional(&n("pre_ffw_norm_2.weight"), &[d])?,
                gate_up,
                down: self.experts(&n("ffn_down_exps.weight"), [f, d, e])?,
                gate_bias: self.optional(&n("ffn_gate_exps.bias"), &[f, e])?,
                up_bias: self.optional(&n("ffn_up_exps.bias"), &[f, e])?,
                down_bias: self.optional(&n("ffn_down_exps.bias"), &[d, e])?,
                down_scale: self.optional(&n("ffn_down_exps.scale"), &[e])?,
                output_norm: self.optional(&n("post_ffw_norm_2.weight"), &[d])?,
            }),
        })
    }

    /// Every tensor of the file was taken (as llama.cpp's loader demands): a tensor left over
    /// means the metadata describes another model than the weights (a wrong `block_count`, a
    /// bias this architecture does not have), which would load and answer garbage.
    fn check_all_used(&self, n_layer: usize) -> Result<(), ModelError> {
        let used = self.used.borrow();
        let Some(extra) = self
            .file
            .header()
            .tensors
            .iter()
            .find(|t| !used.contains(&t.name))
        else {
            return Ok(());
        };
        let layer = extra
            .name
            .strip_prefix("blk.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|n| n.parse::<usize>().ok());
        let reason = match layer {
            Some(il) if il >= n_layer => format!(
                "it belongs to layer {il}, but the metadata's block_count says {n_layer} layers"
            ),
            _ => format!(
                "the {} architecture does not use it",
                self.file.architecture().unwrap_or("unknown")
            ),
        };
        Err(ModelError::UnusedTensor {
            file: self.label(),
            tensor: extra.name.clone(),
            reason,
        })
    }

    /// Required when `wanted`, otherwise not loaded.
    fn when(
        &self,
        wanted: bool,
        name: &str,
        dims: &[usize],
    ) -> Result<Option<B::Weight>, ModelError> {
        if wanted {
            self.required(name, dims).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl<B: Backend> Weights<B> {
    /// Loads every weight `config` calls for. Fills in `config.vocab_size` from the embedding when
    /// the metadata did not give it.
    pub(crate) fn load(
        backend: &B,
        file: &Arc<GgufFile>,
        config: &mut Config,
        progress: &dyn Fn(u64),
    ) -> Result<Self, ModelError> {
        let l = Loader {
            backend,
            file,
            progress,
            used: RefCell::new(HashSet::new()),
        };
        let c = &*config;
        let d = c.d_model;
        // The vocabulary size is the embedding's row count; check it against the metadata.
        let embd_name = "token_embd.weight";
        let vocab = match file.header().tensor_info(embd_name) {
            Some(info) if info.dims.len() == 2 && info.dims[1] > 0 => {
                usize::try_from(info.dims[1]).unwrap_or(usize::MAX)
            }
            Some(info) => {
                return Err(ModelError::ShapeMismatch {
                    file: file.label().to_string(),
                    tensor: embd_name.to_string(),
                    expected: vec![d as u64, c.vocab_size as u64],
                    found: info.dims.clone(),
                });
            }
            None => {
                return Err(ModelError::MissingTensor {
                    file: file.label().to_string(),
                    tensor: embd_name.to_string(),
                });
            }
        };
        if c.vocab_size > 0 && vocab != c.vocab_size {
            return Err(ModelError::ShapeMismatch {
                file: file.label().to_string(),
                tensor: embd_name.to_string(),
                expected: vec![d as u64, c.vocab_size as u64],
                found: vec![d as u64, vocab as u64],
            });
        }
        let token_embd = l.required(embd_name, &[d, vocab])?;
        let mut layers = Vec::with_capacity(c.n_layer);
        for il in 0..c.n_layer {
            let shape = c.layer(il);
            let n = |s: &str| format!("blk.{il}.{s}");
            layers.push(LayerWeights {
                attn_norm: l.required(&n("attn_norm.weight"), &[d])?,
                mixer: match c.recurrent {
                    Some(r) if c.is_recurrent(il) => Mixer::DeltaNet(l.delta_net(c, il, r)?),
                    _ => Mixer::Attention(l.attention(c, il)?),
                },
                post_attn_norm: l.when(c.post_norms, &n("post_attention_norm.weight"), &[d])?,
                ffn_norm: l.required(&n(&format!("{}.weight", c.ffn_norm_name)), &[d])?,
                ffn: l.ffn(c, il, shape.d_ff)?,
                post_ffn_norm: l.when(c.post_norms, &n("post_ffw_norm.weight"), &[d])?,
                output_scale: l
                    .optional_host_vector(&n("layer_output_scale.weight"), 1)?
                    .map(|v| v[0]),
                per_layer: match c.per_layer_embd {
                    0 => None,
                    w => Some(PerLayer {
                        gate: l.required(&n("inp_gate.weight"), &[d, w])?,
                        proj: l.required(&n("proj.weight"), &[w, d])?,
                        post_norm: l.required(&n("post_norm.weight"), &[d])?,
                    }),
                },
            });
        }
        let output_norm = l.required("output_norm.weight", &[d])?;
        let output = l.optional("output.weight", &[d, vocab])?;
        // Llama 3.1+'s `rope_freqs`, or phi3's LongRoPE factors (short and long: llama.cpp takes
        // the long ones for a context beyond `rope.scaling.original_context_length`, see
        // `Model::set_context`).
        let pairs = c.rope_dims / 2;
        let (rope_freqs, rope_freqs_long) = match file.header().tensor_info("rope_freqs.weight") {
            Some(_) => (Some(l.host_vector("rope_freqs.weight", pairs)?), None),
            None if file
                .header()
                .tensor_info("rope_factors_short.weight")
                .is_some() =>
            {
                (
                    Some(l.host_vector("rope_factors_short.weight", pairs)?),
                    Some(l.host_vector("rope_factors_long.weight", pairs)?),
                )
            }
            None => (None, None),
        };
        let per_layer_input = match c.per_layer_embd {
            0 => None,
            w => {
                let all = [d, w * c.n_layer];
                let name = "per_layer_model_proj.weight";
                Some(PerLayerInput {
                    table: l.split_rows(
                        "per_layer_token_embd.weight",
                        [w * c.n_layer, vocab],
                        c.n_layer,
                    )?,
                    projections: (0..c.n_layer)
                        .map(|il| l.rows_of(name, all, il * w..(il + 1) * w))
                        .collect::<Result<_, _>>()?,
                    norm: l.required("per_layer_proj_norm.weight", &[w])?,
                })
            }
        };
        l.check_all_used(c.n_layer)?;
        config.vocab_size = vocab;
        Ok(Weights {
            token_embd,
            layers,
            output_norm,
            output,
            rope_freqs,
            rope_freqs_long,
            per_layer_input,
        })
    }
}
