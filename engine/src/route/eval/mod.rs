//! Measuring a router: the evaluation items (JSONL: prompt, gold answer, grading kind), the
//! automatic grading of a local answer, and the figures a routing signal is judged by: AUROC for
//! predicting a wrong local answer, and the accuracy of the hybrid system against the share of
//! questions sent to the cloud (the cloud assumed correct), with the share of a perfect router's
//! gain over random routing that the signal captures.
//!
//! The grading rules are the evaluation set's own (`router-eval/README.md`); nothing here knows a
//! set's wording or sources.

use serde::Deserialize;

#[cfg(test)]
mod tests;

/// How an answer is graded against the gold answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grading {
    /// The first standalone capital letter A–E equals the gold letter.
    Choice,
    /// The last number (commas removed) equals the gold number.
    Number,
    /// The first "yes" or "no" (any case) equals the gold word.
    YesNo,
    /// After normalizing, one of the aliases appears in the answer.
    Alias,
}

/// One question of an evaluation or training set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EvalItem {
    pub id: String,
    #[serde(default)]
    pub source: String,
    /// The user message.
    pub prompt: String,
    pub grading: Grading,
    pub gold: String,
    /// The accepted answers of `Alias` grading.
    #[serde(default)]
    pub aliases: Option<Vec<String>>,
}

/// A set could not be read: the line and why.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct EvalSetError {
    pub line: usize,
    pub message: String,
}

/// Reads a JSONL set (one item per line; blank lines skipped).
pub fn parse_set(text: &str) -> Result<Vec<EvalItem>, EvalSetError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| EvalSetError {
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

impl EvalItem {
    /// Whether `answer` is correct under the item's grading.
    pub fn grade(&self, answer: &str) -> bool {
        match self.grading {
            Grading::Choice => {
                first_choice(answer).is_some_and(|c| self.gold.trim() == c.to_string())
            }
            Grading::Number => match (last_number(answer), parse_number(&self.gold)) {
                (Some(got), Some(want)) => got == want,
                _ => false,
            },
            Grading::YesNo => {
                first_yes_no(answer).is_some_and(|w| self.gold.trim().eq_ignore_ascii_case(w))
            }
            Grading::Alias => {
                let answer = normalize(answer);
                let gold = std::slice::from_ref(&self.gold);
                self.aliases
                    .as_deref()
                    .unwrap_or(gold)
                    .iter()
                    .map(|a| normalize(a))
                    .any(|a| !a.is_empty() && answer.contains(&a))
            }
        }
    }
}

/// The first capital letter A–E that stands alone (no letter or digit either side).
fn first_choice(answer: &str) -> Option<char> {
    let chars: Vec<char> = answer.chars().collect();
    let word = |c: Option<&char>| c.is_some_and(|c| c.is_alphanumeric());
    (0..chars.len()).find_map(|i| {
        let c = chars[i];
        let alone = !word(i.checked_sub(1).and_then(|j| chars.get(j))) && !word(chars.get(i + 1));
        (('A'..='E').contains(&c) && alone).then_some(c)
    })
}

/// The first whole word "yes" or "no", any case.
fn first_yes_no(answer: &str) -> Option<&'static str> {
    answer.split(|c: char| !c.is_alphanumeric()).find_map(|w| {
        if w.eq_ignore_ascii_case("yes") {
            Some("yes")
        } else if w.eq_ignore_ascii_case("no") {
            Some("no")
        } else {
            None
        }
    })
}

/// The last number in `answer` with commas removed (a sign and a decimal part allowed).
fn last_number(answer: &str) -> Option<f64> {
    let text: String = answer.chars().filter(|&c| c != ',').collect();
    let bytes = text.as_bytes();
    let mut last = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let mut start = i;
            if start > 0 && bytes[start - 1] == b'-' {
                start -= 1;
            }
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            last = text[start..i].parse().ok();
        } else {
            i += 1;
        }
    }
    last
}

fn parse_number(gold: &str) -> Option<f64> {
    gold.trim().replace(',', "").parse().ok()
}

/// Lower case, punctuation removed, the articles a/an/the removed, white space folded.
fn normalize(text: &str) -> String {
    let lower = text.to_lowercase();
    let cleaned: String = lower
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect();
    let words: Vec<&str> = cleaned
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect();
    format!(" {} ", words.join(" "))
}

/// The area under the ROC curve of `risk` for predicting `wrong`: the probability that a wrong
/// answer has a higher risk than a right one (ties count half). `None` without both kinds.
pub fn auroc(risk: &[f64], wrong: &[bool]) -> Option<f64> {
    assert_eq!(risk.len(), wrong.len(), "auroc: lengths");
    let mut order: Vec<usize> = (0..risk.len()).collect();
    order.sort_by(|&a, &b| risk[a].total_cmp(&risk[b]));
    // Mann-Whitney: the wrong answers' mean rank (1-based, ties averaged) against the rights.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && risk[order[j + 1]] == risk[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += rank * order[i..=j].iter().filter(|&&k| wrong[k]).count() as f64;
        i = j + 1;
    }
    let n_wrong = wrong.iter().filter(|&&w| w).count() as f64;
    let n_right = wrong.len() as f64 - n_wrong;
    if n_wrong == 0.0 || n_right == 0.0 {
        return None;
    }
    Some((rank_sum - n_wrong * (n_wrong + 1.0) / 2.0) / (n_wrong * n_right))
}

/// The hybrid system at one cloud share: the questions with the highest risk go to the cloud
/// (assumed correct), the rest keep the local answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SharePoint {
    /// The share of questions sent to the cloud.
    pub cloud_share: f64,
    /// Accuracy routing by the signal.
    pub accuracy: f64,
    /// Expected accuracy routing the same share at random.
    pub random: f64,
    /// Accuracy of a router that sends wrong answers first.
    pub perfect: f64,
}

impl SharePoint {
    /// The fraction of the perfect router's gain over random routing that the signal captures
    /// (`None` where a perfect router gains nothing).
    pub fn gain_share(&self) -> Option<f64> {
        let room = self.perfect - self.random;
        (room > 1e-12).then(|| (self.accuracy - self.random) / room)
    }
}

/// The hybrid accuracy when a `share` of the questions (`share * n` of them, fractional at the
/// edge) is sent to the cloud in order of decreasing `risk`. Questions tied in risk at the edge are
/// sent in equal part (the expected accuracy of breaking the tie at random).
pub fn at_share(risk: &[f64], wrong: &[bool], share: f64) -> SharePoint {
    assert_eq!(risk.len(), wrong.len(), "at_share: lengths");
    let n = risk.len() as f64;
    let local = wrong.iter().filter(|&&w| !w).count() as f64 / n.max(1.0);
    let share = share.clamp(0.0, 1.0);
    let mut order: Vec<usize> = (0..risk.len()).collect();
    order.sort_by(|&a, &b| risk[b].total_cmp(&risk[a]));
    // Correct answers kept locally: every right answer minus the expected rights sent away.
    let mut budget = share * n;
    let mut rights_sent = 0.0;
    let mut i = 0;
    while i < order.len() && budget > 0.0 {
        let mut j = i;
        while j + 1 < order.len() && risk[order[j + 1]] == risk[order[i]] {
            j += 1;
        }
        let group = &order[i..=j];
        let size = group.len() as f64;
        let taken = budget.min(size);
        let rights = group.iter().filter(|&&k| !wrong[k]).count() as f64;
        rights_sent += rights * taken / size;
        budget -= taken;
        i = j + 1;
    }
    let kept_rights = local * n - rights_sent;
    SharePoint {
        cloud_share: share,
        accuracy: (share * n + kept_rights) / n.max(1.0),
        random: share + (1.0 - share) * local,
        perfect: (local + share).min(1.0),
    }
}

/// The risk threshold that sends `share` of these questions to the cloud: a question goes when
/// its risk is at least the threshold.
pub fn threshold_for_share(risk: &[f64], share: f64) -> f64 {
    let mut sorted: Vec<f64> = risk.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let sent = (share.clamp(0.0, 1.0) * sorted.len() as f64).round() as usize;
    match sent {
        0 => f64::INFINITY,
        s => sorted[s.min(sorted.len()) - 1],
    }
}
