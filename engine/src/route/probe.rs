//! The router's learned signal: a logistic probe on the local model's hidden state (the residual
//! stream at its middle layer, [`crate::model::Model::probe_layers`]) at the
//! prompt's last token (which prefill computes anyway), giving the probability that the local
//! answer will be wrong. It costs one dot product per question and is known before the first
//! token, so an unsure question goes to the cloud without a wasted local draft.
//!
//! A probe belongs to one model (its hidden space): [`ProbeModel`] names it, and
//! [`Probe::matches`] refuses a probe for another model. [`fit`] learns one from graded answers
//! (`hearth fit-router`); [`builtin`] holds the probes shipped with Hearth.

use serde::{Deserialize, Serialize};

/// Which model a probe was fitted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeModel {
    /// `general.name` (or the file name when the file has none).
    pub name: String,
    pub architecture: String,
    pub d_model: usize,
    pub layers: usize,
    pub vocab: usize,
}

/// A fitted probe with its calibrated routing threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub model: ProbeModel,
    /// Weights over the hidden state (standardization folded in) and the bias: the risk is
    /// `sigmoid(weights . hidden + bias)`.
    pub weights: Vec<f32>,
    pub bias: f32,
    /// A question goes to the cloud in `auto` mode when its risk is at least this.
    pub threshold: f64,
    /// The share of the training questions the threshold sends to the cloud.
    pub target_share: f64,
    /// The L2 strength chosen by cross-validation, and that cross-validation's mean AUROC.
    pub l2: f64,
    pub cv_auroc: f64,
    /// What it was fitted on (file name, items, local accuracy).
    pub fitted_on: String,
}

impl Probe {
    /// The probability that the local answer is wrong, from the prompt's hidden state.
    pub fn risk(&self, hidden: &[f32]) -> f64 {
        assert_eq!(hidden.len(), self.weights.len(), "probe: hidden width");
        let z: f64 = self
            .weights
            .iter()
            .zip(hidden)
            .map(|(&w, &h)| f64::from(w) * f64::from(h))
            .sum::<f64>()
            + f64::from(self.bias);
        sigmoid(z)
    }

    /// Whether this probe was fitted on `model`.
    pub fn matches(&self, model: &ProbeModel) -> bool {
        &self.model == model
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a probe serializes")
    }

    pub fn from_json(text: &str) -> Result<Probe, String> {
        let p: Probe =
            serde_json::from_str(text).map_err(|e| format!("not a router probe: {e}"))?;
        if p.weights.is_empty() || !p.weights.len().is_multiple_of(p.model.d_model.max(1)) {
            return Err(format!(
                "router probe: {} weights for a model of width {}",
                p.weights.len(),
                p.model.d_model
            ));
        }
        if p.weights.iter().any(|w| !w.is_finite()) || !p.bias.is_finite() {
            return Err("router probe: weights are not finite".into());
        }
        Ok(p)
    }
}

/// The probes shipped with Hearth (fitted with `hearth fit-router` on `router-train.jsonl`).
pub fn builtin() -> Vec<Probe> {
    [include_str!("probes/smollm2-135m-instruct.json")]
        .iter()
        .map(|t| Probe::from_json(t).expect("a shipped probe parses"))
        .collect()
}

/// The shipped probe for `model`, if there is one.
pub fn builtin_for(model: &ProbeModel) -> Option<Probe> {
    builtin().into_iter().find(|p| p.matches(model))
}

/// The probe the `Auto` route uses for `model`: `configured` when it fits the model, else the
/// one Hearth ships for it.
pub fn for_model(configured: Option<&Probe>, model: &ProbeModel) -> Option<Probe> {
    match configured {
        Some(p) if p.matches(model) => Some(p.clone()),
        _ => builtin_for(model),
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// What [`fit`] needs: one hidden state per training question and whether the local answer was
/// wrong.
#[derive(Debug, Clone, Copy)]
pub struct Training<'a> {
    pub hidden: &'a [Vec<f32>],
    pub wrong: &'a [bool],
}

/// The L2 strengths cross-validation chooses from.
pub const L2_GRID: [f64; 9] = [1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 0.3, 1.0, 3.0];

/// Folds of the cross-validation.
pub const FOLDS: usize = 5;

/// Fits a probe: standardizes the features, picks the L2 strength with the best mean AUROC over
/// [`FOLDS`] folds, fits on everything with it, and sets the threshold that sends
/// `target_share` of the training questions to the cloud.
pub fn fit(model: ProbeModel, data: Training<'_>, target_share: f64, fitted_on: String) -> Probe {
    let n = data.hidden.len();
    assert_eq!(n, data.wrong.len(), "fit: lengths");
    assert!(n >= 2 * FOLDS, "fit: at least {} questions", 2 * FOLDS);
    let d = data.hidden[0].len();
    let (mean, scale) = standardization(data.hidden, d);
    let x: Vec<Vec<f64>> = data
        .hidden
        .iter()
        .map(|h| {
            (0..d)
                .map(|j| (f64::from(h[j]) - mean[j]) / scale[j])
                .collect()
        })
        .collect();
    let y: Vec<f64> = data.wrong.iter().map(|&w| f64::from(u8::from(w))).collect();
    // Interleaved folds (the set's order is not assumed random or sorted).
    let fold = |i: usize| i % FOLDS;
    let mut best = (f64::NEG_INFINITY, L2_GRID[0]);
    for &l2 in &L2_GRID {
        let mut total = 0.0;
        for f in 0..FOLDS {
            let train: Vec<usize> = (0..n).filter(|&i| fold(i) != f).collect();
            let test: Vec<usize> = (0..n).filter(|&i| fold(i) == f).collect();
            let (w, b) = logistic(&x, &y, &train, l2);
            let risk: Vec<f64> = test.iter().map(|&i| dot(&w, &x[i]) + b).collect();
            let wrong: Vec<bool> = test.iter().map(|&i| data.wrong[i]).collect();
            total += super::eval::auroc(&risk, &wrong).unwrap_or(0.5);
        }
        let auc = total / FOLDS as f64;
        if auc > best.0 {
            best = (auc, l2);
        }
    }
    let (cv_auroc, l2) = best;
    let all: Vec<usize> = (0..n).collect();
    let (w, b) = logistic(&x, &y, &all, l2);
    // Fold the standardization into the weights.
    let weights: Vec<f32> = (0..d).map(|j| (w[j] / scale[j]) as f32).collect();
    let bias = (b - (0..d).map(|j| w[j] * mean[j] / scale[j]).sum::<f64>()) as f32;
    let mut probe = Probe {
        model,
        weights,
        bias,
        threshold: 0.5,
        target_share,
        l2,
        cv_auroc,
        fitted_on,
    };
    let risk: Vec<f64> = data.hidden.iter().map(|h| probe.risk(h)).collect();
    probe.threshold = super::eval::threshold_for_share(&risk, target_share);
    probe
}

fn standardization(hidden: &[Vec<f32>], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = hidden.len() as f64;
    let mut mean = vec![0.0; d];
    for h in hidden {
        for (m, &v) in mean.iter_mut().zip(h) {
            *m += f64::from(v) / n;
        }
    }
    let mut var = vec![0.0; d];
    for h in hidden {
        for j in 0..d {
            var[j] += (f64::from(h[j]) - mean[j]).powi(2) / n;
        }
    }
    let scale = var.iter().map(|v| v.sqrt().max(1e-6)).collect();
    (mean, scale)
}

fn dot(w: &[f64], x: &[f64]) -> f64 {
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}

/// L2-regularized logistic regression on rows `rows` of `x` (standardized) by Newton's method:
/// the loss is convex, so a handful of steps reach the optimum. Returns (weights, bias).
fn logistic(x: &[Vec<f64>], y: &[f64], rows: &[usize], l2: f64) -> (Vec<f64>, f64) {
    let d = x[0].len();
    let m = rows.len() as f64;
    // Parameters: d weights, then the bias (not regularized).
    let p = d + 1;
    let mut theta = vec![0.0; p];
    for _ in 0..15 {
        let mut grad = vec![0.0; p];
        let mut hess = vec![0.0; p * p];
        for &i in rows {
            let xi = &x[i];
            let z = dot(&theta[..d], xi) + theta[d];
            let s = sigmoid(z);
            let r = (s - y[i]) / m;
            let c = s * (1.0 - s) / m;
            for a in 0..d {
                grad[a] += r * xi[a];
                let ca = c * xi[a];
                let row = &mut hess[a * p..(a + 1) * p];
                for bidx in a..d {
                    row[bidx] += ca * xi[bidx];
                }
                row[d] += ca;
            }
            grad[d] += r;
            hess[d * p + d] += c;
        }
        for a in 0..d {
            grad[a] += l2 * theta[a];
            hess[a * p + a] += l2;
        }
        hess[d * p + d] += 1e-9;
        // Mirror the upper triangle.
        for a in 0..p {
            for bidx in 0..a {
                hess[a * p + bidx] = hess[bidx * p + a];
            }
        }
        let step = solve_spd(&mut hess, &grad, p);
        let mut largest: f64 = 0.0;
        for (t, s) in theta.iter_mut().zip(&step) {
            *t -= s;
            largest = largest.max(s.abs());
        }
        if largest < 1e-6 {
            break;
        }
    }
    let b = theta[d];
    theta.truncate(d);
    (theta, b)
}

/// Solves `a x = b` for a symmetric positive definite `a` (`p x p`, overwritten) by Cholesky.
fn solve_spd(a: &mut [f64], b: &[f64], p: usize) -> Vec<f64> {
    for j in 0..p {
        let mut diag = a[j * p + j];
        for k in 0..j {
            diag -= a[j * p + k] * a[j * p + k];
        }
        let l = diag.max(1e-12).sqrt();
        a[j * p + j] = l;
        for i in j + 1..p {
            let mut v = a[i * p + j];
            for k in 0..j {
                v -= a[i * p + k] * a[j * p + k];
            }
            a[i * p + j] = v / l;
        }
    }
    let mut y = b.to_vec();
    for i in 0..p {
        for k in 0..i {
            y[i] -= a[i * p + k] * y[k];
        }
        y[i] /= a[i * p + i];
    }
    for i in (0..p).rev() {
        for k in i + 1..p {
            y[i] -= a[k * p + i] * y[k];
        }
        y[i] /= a[i * p + i];
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ProbeModel {
        ProbeModel {
            name: "toy".into(),
            architecture: "llama".into(),
            d_model: 3,
            layers: 1,
            vocab: 10,
        }
    }

    #[test]
    fn cholesky_solves_a_known_system() {
        // [[4,2,0],[2,3,1],[0,1,2]] x = [2,5,3] has x = [-1/3, 5/3, 2/3].
        let mut a = vec![4.0, 2.0, 0.0, 2.0, 3.0, 1.0, 0.0, 1.0, 2.0];
        let x = solve_spd(&mut a, &[2.0, 5.0, 3.0], 3);
        for (got, want) in x.iter().zip([-1.0 / 3.0, 5.0 / 3.0, 2.0 / 3.0]) {
            assert!((got - want).abs() < 1e-12, "{x:?}");
        }
    }

    #[test]
    fn a_fitted_probe_ranks_by_the_informative_feature_and_sets_the_share() {
        // Feature 0 decides wrongness (with noise), feature 1 is noise, feature 2 is constant.
        let mut rng = fastrand::Rng::with_seed(7);
        let mut hidden = Vec::new();
        let mut wrong = Vec::new();
        for _ in 0..400 {
            let signal = rng.f32() * 4.0 - 2.0;
            let noisy = signal + (rng.f32() - 0.5);
            hidden.push(vec![signal * 3.0 + 10.0, rng.f32() * 100.0, 5.0]);
            wrong.push(noisy > 0.3);
        }
        let p = fit(
            model(),
            Training {
                hidden: &hidden,
                wrong: &wrong,
            },
            0.3,
            "toy".into(),
        );
        assert!(p.weights[0] > 0.0, "{:?}", p.weights);
        assert!(
            p.weights[0].abs() > 10.0 * p.weights[1].abs(),
            "{:?}",
            p.weights
        );
        assert!(p.cv_auroc > 0.9, "{}", p.cv_auroc);
        let risk: Vec<f64> = hidden.iter().map(|h| p.risk(h)).collect();
        let sent = risk.iter().filter(|&&r| r >= p.threshold).count();
        assert_eq!(sent, 120, "30% of 400");
        let auc = super::super::eval::auroc(&risk, &wrong).unwrap();
        assert!(auc > 0.9, "{auc}");
        // The JSON form round-trips and keeps the risk.
        let back = Probe::from_json(&p.to_json()).unwrap();
        assert_eq!(back.risk(&hidden[0]), p.risk(&hidden[0]));
        assert!(back.matches(&model()));
        assert!(!back.matches(&ProbeModel {
            d_model: 4,
            ..model()
        }));
    }

    #[test]
    fn a_probe_for_another_width_is_refused() {
        let mut p = fit(
            model(),
            Training {
                hidden: &(0..20)
                    .map(|i| vec![i as f32, 1.0, 2.0])
                    .collect::<Vec<_>>(),
                wrong: &(0..20).map(|i| i % 3 == 0).collect::<Vec<_>>(),
            },
            0.3,
            "toy".into(),
        );
        p.weights.push(1.0);
        let err = Probe::from_json(&p.to_json()).unwrap_err();
        assert!(err.contains("4 weights for a model of width 3"), "{err}");
        // Whole multiples of the width are states of several layers.
        p.weights.extend([1.0, 1.0]);
        assert!(Probe::from_json(&p.to_json()).is_ok());
    }

    #[test]
    fn the_shipped_probes_parse() {
        for p in builtin() {
            assert_eq!(p.weights.len() % p.model.d_model, 0);
            assert!(p.threshold > 0.0 && p.threshold < 1.0, "{}", p.threshold);
        }
    }
}
