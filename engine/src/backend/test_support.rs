//! What the backend tests share: the test models, hidden-state-like inputs, and the comparison
//! by normalized error.

use std::sync::Arc;

use crate::backend::host::HostTensor;
use crate::gguf::GgufFile;
use crate::source::{self, GEMMA3_270M_Q4_K_M, SMOLLM2_135M_Q4_1};

/// Both test models, fetched (and verified) on first use, then the reference files of the newer
/// weight types (`tests/data/arch/`: IQ4_XS, MXFP4, the codebook i-quants IQ3_S .. IQ1_M and the
/// ternary TQ1_0, TQ2_0), so every op test covers their tensors too.
pub(crate) fn model_files() -> Vec<Arc<GgufFile>> {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/arch");
    let models = [&SMOLLM2_135M_Q4_1, &GEMMA3_270M_Q4_K_M]
        .into_iter()
        .map(|m| source::fetch(m).unwrap());
    let types = [
        "llama-iq4_xs.gguf",
        "llama-mxfp4.gguf",
        "llama-iq3_s.gguf",
        "llama-iq3_xxs.gguf",
        "llama-iq2_xxs.gguf",
        "llama-iq2_xs.gguf",
        "llama-iq2_s.gguf",
        "llama-iq1_s.gguf",
        "llama-iq1_m.gguf",
        "llama-tq1_0.gguf",
        "llama-tq2_0.gguf",
    ]
    .map(|f| data.join(f));
    models
        .chain(types)
        .map(|path| Arc::new(GgufFile::open(path).unwrap()))
        .collect()
}

/// Hidden-state-like activations: mostly small, a few large.
pub(crate) fn activations(rng: &mut fastrand::Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = rng.f32() * 2.0 - 1.0;
            if rng.u8(..) < 4 { v * 30.0 } else { v }
        })
        .collect()
}

/// A reference-backend tensor holding `data`.
pub(crate) fn tensor(rows: usize, cols: usize, data: Vec<f32>) -> HostTensor {
    HostTensor::from_vec(rows, cols, data).unwrap()
}

/// `|got - want|` relative to the output's scale (its largest magnitude), at most `tol`
/// everywhere; a NaN fails. The message names the worst element.
pub(crate) fn assert_close(label: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{label}: lengths");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    let (mut worst, mut at) = (0.0f32, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / scale;
        if err > worst || err.is_nan() {
            (worst, at) = (err, i);
        }
    }
    assert!(
        worst <= tol,
        "{label}[{at}]: {} vs {} (normalized error {worst:e} > {tol:e})",
        got[at],
        want[at]
    );
}

/// One real matrix per weight type of `file` (the smallest of its type, at most 1024 rows, a
/// multiple of 64), renamed as an expert tensor of 4 experts: what the expert tests run.
pub(crate) fn expert_views(file: &GgufFile) -> Vec<crate::gguf::TensorInfo> {
    let mut picked: Vec<crate::gguf::TensorInfo> = Vec::new();
    for info in file.tensors().iter().filter(|i| i.dims.len() == 2) {
        let rows = (info.dims[1] as usize).min(1024) / 64 * 64;
        if rows == 0 {
            continue;
        }
        let mut view = info.clone();
        view.dims[1] = rows as u64;
        view.name = "blk.0.ffn_up_exps.weight".into();
        match picked.iter_mut().find(|p| p.ty == info.ty) {
            Some(p) if view.dims[1] < p.dims[1] => *p = view,
            Some(_) => {}
            None => picked.push(view),
        }
    }
    picked
}

/// Expert ids for `n` tokens of 2 slots among 4 experts: slot 0 is expert 1 for every token (so
/// a prompt batch takes the batched path for it), slot 1 another expert.
pub(crate) fn expert_ids(rng: &mut fastrand::Rng, n: usize) -> Vec<f32> {
    (0..n)
        .flat_map(|_| {
            let other = [0.0, 2.0, 3.0][rng.usize(..3)];
            [1.0, other]
        })
        .collect()
}

/// A Gated DeltaNet case for the backends' tests: 2 key heads and 8 value heads of 64 (enough
/// work for the CPU's parallel path), 4 taps; the inputs of three steps of two sequences (a
/// prompt of 9 rows each in one batch, then one decode row each, then 3 more rows of one),
/// and the conv taps as a one-tensor file.
pub(crate) struct DeltaCase {
    pub a: Vec<f32>,
    pub dt_bias: Vec<f32>,
    pub conv_file: Arc<GgufFile>,
    pub steps: Vec<DeltaStep>,
}

/// One step of a [`DeltaCase`]: qkv, beta, alpha values, and the rows' slots and positions.
pub(crate) type DeltaStep = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<u32>, Vec<u32>);

impl DeltaCase {
    pub(crate) const N_K: usize = 2;
    pub(crate) const N_V: usize = 8;
    pub(crate) const D: usize = 64;
    pub(crate) const KERNEL: usize = 4;

    pub(crate) fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let ch = (2 * Self::N_K + Self::N_V) * Self::D;
        let taps = activations(&mut rng, Self::KERNEL * ch);
        let conv_file = Arc::new(
            GgufFile::from_bytes(
                crate::gguf::GgufBuilder::new()
                    .tensor(
                        "blk.0.ssm_conv1d.weight",
                        &[(Self::KERNEL * ch) as u64],
                        crate::quant::GgmlType::F32,
                        taps.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    )
                    .build(),
                "conv.gguf",
            )
            .unwrap(),
        );
        let mut steps = Vec::new();
        let layout: [&[(u32, u32, usize)]; 4] = [
            &[(0, 0, 9), (1, 0, 9)],
            &[(1, 9, 1), (0, 9, 1)],
            &[(0, 10, 3)],
            // A run longer than a chunk of the CPU's chunked rule, next to a short one.
            &[(1, 10, 70), (0, 13, 2)],
        ];
        for runs in layout {
            let (mut slots, mut positions) = (Vec::new(), Vec::new());
            for &(slot, start, len) in runs {
                for p in start..start + len as u32 {
                    slots.push(slot);
                    positions.push(p);
                }
            }
            let n = slots.len();
            let scale = |v: Vec<f32>, s: f32| v.into_iter().map(|x| x * s).collect::<Vec<_>>();
            steps.push((
                scale(activations(&mut rng, n * ch), 8.0),
                scale(activations(&mut rng, n * Self::N_V), 8.0),
                scale(activations(&mut rng, n * Self::N_V), 8.0),
                slots,
                positions,
            ));
        }
        Self {
            a: (0..Self::N_V).map(|j| -0.1 - 0.2 * j as f32).collect(),
            dt_bias: (0..Self::N_V).map(|j| 0.05 * j as f32 - 0.2).collect(),
            conv_file,
            steps,
        }
    }

    pub(crate) fn net(&self) -> crate::backend::DeltaNet<'_> {
        crate::backend::DeltaNet {
            n_k: Self::N_K,
            n_v: Self::N_V,
            d: Self::D,
            kernel: Self::KERNEL,
            eps: 1e-6,
            a: &self.a,
            dt_bias: &self.dt_bias,
        }
    }
}
