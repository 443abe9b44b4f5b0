//! Evaluation metrics per output, with micro and macro averages.

use serde::Serialize;

/// Metrics of one output (or an average).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    /// Output name, `micro` or `macro`.
    pub name: String,
    /// Mean BCE (from logits, computed stably).
    pub log_loss: f64,
    /// Fraction of correct labels at the threshold.
    pub accuracy: f64,
    /// TP / (TP + FP); NaN when nothing is predicted positive.
    pub precision: f64,
    /// TP / (TP + FN); NaN without positives.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Area under the ROC curve (ties averaged); NaN when only one class is present.
    pub roc_auc: f64,
}

/// Counts and scores of one output, for the averages.
struct Tally {
    tp: f64,
    fp: f64,
    fn_: f64,
    tn: f64,
    loss: f64,
}

fn bce(z: f64, y: f64) -> f64 {
    z.max(0.0) - z * y + (-z.abs()).exp().ln_1p()
}

/// ROC-AUC by ranks (Mann–Whitney U), ties given their average rank.
fn roc_auc(scores: &[(f64, bool)]) -> f64 {
    let mut sorted = scores.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut positives) = (0.0, 0.0);
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let average_rank = (i + j + 1) as f64 / 2.0;
        for s in &sorted[i..j] {
            if s.1 {
                rank_sum += average_rank;
                positives += 1.0;
            }
        }
        i = j;
    }
    let negatives = sorted.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return f64::NAN;
    }
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

fn from_tally(name: String, t: &Tally, n: f64, roc_auc: f64) -> Metrics {
    let precision = t.tp / (t.tp + t.fp);
    let recall = t.tp / (t.tp + t.fn_);
    Metrics {
        name,
        log_loss: t.loss / n,
        accuracy: (t.tp + t.tn) / n,
        precision,
        recall,
        f1: 2.0 * precision * recall / (precision + recall),
        roc_auc,
    }
}

/// Metrics for each output of `logits` (n×o) against `targets` (n×o; a target ≥ 0.5 counts
/// as positive), predicting positive where σ(z) ≥ `threshold`, followed by the micro average
/// (all n·o elements pooled) and the macro average (mean over outputs) when o > 1.
pub fn evaluate(
    logits: &[f32],
    targets: &[f32],
    o: usize,
    names: &[String],
    threshold: f64,
) -> Vec<Metrics> {
    let n = logits.len() / o.max(1);
    let cut = (threshold / (1.0 - threshold)).ln(); // σ(z) ≥ t ⇔ z ≥ logit(t)
    let mut per_output = Vec::with_capacity(o + 2);
    let mut pooled = Tally {
        tp: 0.0,
        fp: 0.0,
        fn_: 0.0,
        tn: 0.0,
        loss: 0.0,
    };
    let mut pooled_scores = Vec::with_capacity(logits.len());
    for k in 0..o {
        let mut t = Tally {
            tp: 0.0,
            fp: 0.0,
            fn_: 0.0,
            tn: 0.0,
            loss: 0.0,
        };
        let mut scores = Vec::with_capacity(n);
        for i in 0..n {
            let (z, y) = (logits[i * o + k] as f64, targets[i * o + k] as f64);
            let (predicted, actual) = (z >= cut, y >= 0.5);
            match (predicted, actual) {
                (true, true) => t.tp += 1.0,
                (true, false) => t.fp += 1.0,
                (false, true) => t.fn_ += 1.0,
                (false, false) => t.tn += 1.0,
            }
            t.loss += bce(z, y);
            scores.push((z, actual));
        }
        let name = names
            .get(k)
            .cloned()
            .unwrap_or_else(|| format!("output {k}"));
        per_output.push(from_tally(name, &t, n as f64, roc_auc(&scores)));
        pooled.tp += t.tp;
        pooled.fp += t.fp;
        pooled.fn_ += t.fn_;
        pooled.tn += t.tn;
        pooled.loss += t.loss;
        pooled_scores.extend(scores);
    }
    if o > 1 {
        let micro = from_tally(
            "micro".into(),
            &pooled,
            (n * o) as f64,
            roc_auc(&pooled_scores),
        );
        let mean = |f: fn(&Metrics) -> f64| per_output.iter().map(f).sum::<f64>() / o as f64;
        let macro_avg = Metrics {
            name: "macro".into(),
            log_loss: mean(|m| m.log_loss),
            accuracy: mean(|m| m.accuracy),
            precision: mean(|m| m.precision),
            recall: mean(|m| m.recall),
            f1: mean(|m| m.f1),
            roc_auc: mean(|m| m.roc_auc),
        };
        per_output.push(micro);
        per_output.push(macro_avg);
    }
    per_output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_a_small_case() {
        // logits → predictions at 0.5: [1, 0, 1, 0]; targets [1, 1, 0, 0].
        let logits = [2.0, -1.0, 0.5, -3.0];
        let targets = [1.0, 1.0, 0.0, 0.0];
        let m = &evaluate(&logits, &targets, 1, &["y".into()], 0.5)[0];
        assert_eq!(
            (m.accuracy, m.precision, m.recall, m.f1),
            (0.5, 0.5, 0.5, 0.5)
        );
        // Scores sorted: −3 (neg), −1 (pos), 0.5 (neg), 2 (pos): 3 of 4 pairs ordered.
        assert_eq!(m.roc_auc, 0.75);
        let want = [bce(2.0, 1.0), bce(-1.0, 1.0), bce(0.5, 0.0), bce(-3.0, 0.0)]
            .iter()
            .sum::<f64>()
            / 4.0;
        assert!((m.log_loss - want).abs() < 1e-15);
        assert!(roc_auc(&[(1.0, true), (1.0, false)]) == 0.5);
    }
}
