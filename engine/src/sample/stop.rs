//! Stop strings over streamed text: generated text arrives one decoded token at a time, and a stop
//! string may be split across tokens, so text that could still turn into one is held back until
//! it is known either way.

/// What to do after one piece of streamed text (see [`StopStrings::push`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StopStep {
    /// Text now certain not to be part of a stop string, to show to the user.
    pub emit: String,
    /// A stop string was completed: generation should end. `emit` is the text before it; the stop
    /// string and anything after it are dropped.
    pub stopped: bool,
}

/// Watches streamed text for any of a set of stop strings.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    /// Text received but not emitted yet: a suffix that is a prefix of some stop string.
    pending: String,
    stopped: bool,
}

impl StopStrings {
    /// Watches for `stops`; empty strings are ignored.
    pub fn new(stops: &[String]) -> Self {
        StopStrings {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..StopStrings::default()
        }
    }

    /// Whether a stop string was completed.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Takes the next piece of text (`delta`). Returns the text that is now safe to emit: all of
    /// it but the longest suffix that starts a stop string, or, once a stop string is complete,
    /// the text before it (with `stopped` set). When stop strings overlap, the one completed
    /// first in the text wins (of those ending at the same place, the one starting first), so the
    /// result does not depend on how the text was split into deltas. After a stop, every push
    /// returns nothing, with `stopped` set.
    pub fn push(&mut self, delta: &str) -> StopStep {
        if self.stopped {
            return StopStep {
                emit: String::new(),
                stopped: true,
            };
        }
        self.pending.push_str(delta);
        // Every stop string that occurs starts inside `pending`: anything emitted before could
        // not start one.
        let first_completed = self
            .stops
            .iter()
            .filter_map(|stop| {
                let at = self.pending.find(stop.as_str())?;
                Some((at + stop.len(), at))
            })
            .min();
        if let Some((_, at)) = first_completed {
            self.pending.truncate(at);
            self.stopped = true;
            return StopStep {
                emit: std::mem::take(&mut self.pending),
                stopped: true,
            };
        }
        let keep = self.pending.len() - self.held_back_len();
        let held = self.pending.split_off(keep);
        StopStep {
            emit: std::mem::replace(&mut self.pending, held),
            stopped: false,
        }
    }

    /// The text still held back, at the end of generation (when no stop string was completed,
    /// it is no longer a stop string's start but plain output).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// The length in bytes of the longest suffix of `pending` that is a proper prefix of a stop
    /// string (on a char boundary).
    fn held_back_len(&self) -> usize {
        let text = self.pending.as_bytes();
        self.stops
            .iter()
            .filter_map(|stop| {
                let longest = (stop.len() - 1).min(text.len());
                (1..=longest).rev().find(|&k| {
                    let start = text.len() - k;
                    self.pending.is_char_boundary(start)
                        && stop.as_bytes().starts_with(&text[start..])
                })
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(list: &[&str]) -> StopStrings {
        StopStrings::new(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn step(emit: &str, stopped: bool) -> StopStep {
        StopStep {
            emit: emit.to_string(),
            stopped,
        }
    }

    /// Everything emitted for `deltas`, then `finish`'s text (if not stopped), and whether it
    /// stopped.
    fn run(list: &[&str], deltas: &[&str]) -> (String, bool) {
        let mut s = stops(list);
        let mut out = String::new();
        for d in deltas {
            let st = s.push(d);
            out.push_str(&st.emit);
            if st.stopped {
                return (out, true);
            }
        }
        out.push_str(&s.finish());
        (out, false)
    }

    #[test]
    fn stop_string_split_across_three_deltas_is_held_back_then_dropped() {
        let mut s = stops(&["<|end|>"]);
        assert_eq!(s.push("Hello <|"), step("Hello ", false));
        assert_eq!(s.push("en"), step("", false));
        assert_eq!(s.push("d|> more"), step("", true));
        assert!(s.is_stopped());
        assert_eq!(s.push("later"), step("", true));
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn stop_string_inside_one_delta_emits_only_the_text_before_it() {
        let mut s = stops(&["STOP"]);
        assert_eq!(s.push("ab"), step("ab", false));
        assert_eq!(s.push("c STOP def"), step("c ", true));
    }

    #[test]
    fn false_partial_match_is_released_when_it_stops_matching() {
        let mut s = stops(&["</s>"]);
        assert_eq!(s.push("a </"), step("a ", false));
        assert_eq!(s.push("b> c"), step("</b> c", false));
        // Held back again at the end, released by finish.
        assert_eq!(s.push(" <"), step(" ", false));
        assert_eq!(s.finish(), "<");
        assert!(!s.is_stopped());
    }

    #[test]
    fn with_overlapping_stop_strings_the_first_completed_wins() {
        // "end" is a prefix of "endless": it completes first.
        assert_eq!(
            run(&["endless", "end"], &["the endl", "ess"]),
            ("the ".into(), true)
        );
        // "xy" completes before "axyz", though "axyz" starts first.
        assert_eq!(run(&["axyz", "xy"], &["1axyz"]), ("1a".into(), true));
        assert_eq!(
            run(&["axyz", "xy"], &["1", "a", "x", "y", "z"]),
            ("1a".into(), true)
        );
        // Same end: the longer stop string (starting first) is dropped whole.
        assert_eq!(run(&["b", "ab"], &["xab"]), ("x".into(), true));
        // The hold-back covers the longest possible start.
        let mut s = stops(&["ab", "aab"]);
        assert_eq!(s.push("caa"), step("c", false));
        assert_eq!(s.finish(), "aa");
    }

    #[test]
    fn non_ascii_text_is_split_only_on_char_boundaries() {
        let mut s = stops(&["élan", "日本語"]);
        assert_eq!(s.push("café é"), step("café ", false));
        assert_eq!(s.push("l"), step("", false));
        assert_eq!(s.push("ü"), step("élü", false));
        assert_eq!(s.push("日本"), step("", false));
        assert_eq!(s.push("語です"), step("", true));
        // "ã" and "é" share their first byte, but "ã" is no prefix of "é".
        let mut s = stops(&["é"]);
        assert_eq!(s.push("pã"), step("pã", false));
        assert_eq!(s.push("ñé!"), step("ñ", true));
    }

    #[test]
    fn without_stop_strings_everything_passes_through() {
        let mut s = stops(&["", ""]);
        assert_eq!(s.push("a"), step("a", false));
        assert_eq!(s.push(""), step("", false));
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn result_does_not_depend_on_how_the_text_is_split() {
        let cases: [(&str, &[&str]); 4] = [
            ("one two </s> three", &["</s>", "</"]),
            ("a<<b<<<c<<<<", &["<<<<", "<<<c"]),
            ("ünïcödé ünï", &["cödé ü", "é ün"]),
            ("nothing here at all", &["zz", "ere a!"]),
        ];
        let mut rng = fastrand::Rng::with_seed(3);
        for (text, list) in cases {
            let whole = run(list, &[text]);
            let chars: Vec<char> = text.chars().collect();
            for _ in 0..200 {
                let mut deltas = Vec::new();
                let mut i = 0;
                while i < chars.len() {
                    let n = rng.usize(0..=3).min(chars.len() - i);
                    deltas.push(chars[i..i + n].iter().collect::<String>());
                    i += n;
                }
                let deltas: Vec<&str> = deltas.iter().map(String::as_str).collect();
                assert_eq!(run(list, &deltas), whole, "{text:?} split as {deltas:?}");
            }
        }
        assert_eq!(run(&["</s>", "</"], &["one two </s> three"]).0, "one two ");
        assert_eq!(run(&["<<<<", "<<<c"], &["a<<b<<<c<<<<"]).0, "a<<b");
        assert_eq!(run(&["zz"], &["nothing"]), ("nothing".into(), false));
    }
}
