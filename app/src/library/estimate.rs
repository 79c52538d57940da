//! Will a model fit? The memory a model needs at a context length (weights + KV cache + runtime
//! overhead, the same KV formula `hearth inspect` prints) against what the system has available,
//! as the top bar's fits / tight / will not fit verdict, computed before anything is loaded.

use std::path::Path;

use super::discover::Facts;
use crate::format;

/// Memory beyond weights and KV cache: the process, tokenizer, activations and logits. Measured:
/// `hearth run` on SmolLM2-135M (94 MiB of weights) peaks at about 144 MiB resident, so ~50 MiB
/// besides the weights; the desktop app's UI and upload buffers come on top, hence 128 MiB.
pub const RUNTIME_OVERHEAD_BYTES: u64 = 128 << 20;

/// Above this share of the available memory the verdict is [`Verdict::Tight`].
pub const TIGHT_FRACTION: f64 = 0.7;

/// The verdict shown beside the model picker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Needs at most 70% of the available memory.
    Fits,
    /// Needs more than 70% of it: it loads, but the system may start swapping.
    Tight,
    /// Needs more than is available.
    WontFit,
    /// The available memory is not known on this system.
    Unknown,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Self::Fits => "fits",
            Self::Tight => "tight",
            Self::WontFit => "will not fit",
            Self::Unknown => "unknown",
        }
    }
}

/// Memory needed to run a model at a context length, and whether it is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub context_tokens: u64,
    /// The whole file: it is memory-mapped, and the pages in use stay resident.
    pub weights_bytes: u64,
    /// `None` when the file lacks the shape (layers, KV heads, head size) to compute it. A
    /// recurrent model's per-conversation states are counted here too.
    pub kv_cache_bytes: Option<u64>,
    pub overhead_bytes: u64,
    /// Weight bytes each generated token reads (a mixture-of-experts model reads only its used
    /// experts; all of them stay mapped, so the whole file still counts as needed).
    pub bytes_per_token: u64,
    pub needed_bytes: u64,
    /// `None` when this system does not say (only Linux's `/proc/meminfo` is read).
    pub available_bytes: Option<u64>,
    pub verdict: Verdict,
}

impl Estimate {
    /// One line for the top bar: "needs 272.1 MiB of 7.6 GiB available: fits".
    pub fn describe(&self) -> String {
        let needed = format::bytes(self.needed_bytes);
        let kv = if self.kv_cache_bytes.is_none() {
            " (KV cache unknown: the file does not give the model's shape)"
        } else {
            ""
        };
        match self.available_bytes {
            Some(avail) => format!(
                "needs {needed}{kv} of {} available: {}",
                format::bytes(avail),
                self.verdict.label()
            ),
            None => format!(
                "needs {needed}{kv}; available memory is unknown on this system, \
                 so whether it fits cannot be checked"
            ),
        }
    }
}

/// The memory `facts`' model needs at `context_tokens`, judged against `available` bytes.
pub fn estimate(facts: &Facts, context_tokens: u64, available: Option<u64>) -> Estimate {
    let s = &facts.summary;
    let weights_bytes = s.file_bytes;
    // A recurrent model's states (one conversation's) count with its cache.
    // Sliding-window layers hold a ring of positions, not the whole context.
    let kv = s
        .kv_cache_bytes_at(context_tokens)
        .map(|kv| kv.saturating_add(s.state_bytes.unwrap_or(0)));
    let needed_bytes = weights_bytes
        .saturating_add(kv.unwrap_or(0))
        .saturating_add(RUNTIME_OVERHEAD_BYTES);
    Estimate {
        context_tokens,
        weights_bytes,
        kv_cache_bytes: kv,
        overhead_bytes: RUNTIME_OVERHEAD_BYTES,
        bytes_per_token: s.bytes_per_token,
        needed_bytes,
        available_bytes: available,
        verdict: verdict(needed_bytes, available),
    }
}

/// Fits up to 70% of `available`, tight up to all of it, then will not fit.
pub fn verdict(needed: u64, available: Option<u64>) -> Verdict {
    match available {
        None => Verdict::Unknown,
        Some(avail) if needed > avail => Verdict::WontFit,
        Some(avail) if needed as f64 > avail as f64 * TIGHT_FRACTION => Verdict::Tight,
        Some(_) => Verdict::Fits,
    }
}

/// Memory available for a new process: `MemAvailable` from `/proc/meminfo` on Linux; `None`
/// elsewhere or when it cannot be read.
pub fn available_memory() -> Option<u64> {
    available_from(Path::new("/proc/meminfo"))
}

fn available_from(meminfo: &Path) -> Option<u64> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    parse_mem_available(&std::fs::read_to_string(meminfo).ok()?)
}

/// The `MemAvailable:` line of a `/proc/meminfo` text, in bytes.
pub fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let mut parts = line.split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let unit = match parts.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use hearth_engine::source::{self, SMOLLM2_135M_Q4_1};

    use super::*;
    use crate::library::discover::read_facts;

    const MIB: u64 = 1 << 20;

    fn smollm2_facts() -> Facts {
        read_facts(&source::fetch(&SMOLLM2_135M_Q4_1).expect("test model")).expect("facts")
    }

    #[test]
    fn smollm2_at_2048_tokens_needs_file_plus_22_kib_per_token_plus_overhead() {
        let facts = smollm2_facts();
        // 30 layers x 3 KV heads x 64 dims x 2 (K and V) x 2 bytes = 23,040 bytes per token.
        let e = estimate(&facts, 2048, Some(8 << 30));
        assert_eq!(e.weights_bytes, 98_362_432);
        assert_eq!(e.kv_cache_bytes, Some(23_040 * 2048));
        assert_eq!(e.kv_cache_bytes, Some(47_185_920));
        assert_eq!(e.overhead_bytes, 128 * MIB);
        assert_eq!(e.needed_bytes, 98_362_432 + 47_185_920 + 134_217_728);
        assert_eq!(e.available_bytes, Some(8 << 30));
        assert_eq!(e.verdict, Verdict::Fits);
        assert_eq!(
            e.describe(),
            "needs 266.8 MiB of 8.0 GiB available: fits",
            "{e:?}"
        );
    }

    #[test]
    fn kv_cache_matches_what_hearth_inspect_prints() {
        let facts = smollm2_facts();
        // `hearth inspect` reports 180.0 MiB of KV cache at the full 8192 tokens.
        let inspect = &facts.summary.memory[0];
        assert_eq!(inspect.context_tokens, 8192);
        let e = estimate(&facts, 8192, None);
        assert_eq!(e.kv_cache_bytes, Some(inspect.kv_cache_bytes));
        assert_eq!(inspect.kv_cache_bytes, 180 * MIB);
    }

    #[test]
    fn verdict_thresholds_on_smollm2_at_8192_tokens() {
        let facts = smollm2_facts();
        // 98,362,432 + 188,743,680 + 134,217,728 bytes.
        let needed = 421_323_840;
        assert_eq!(estimate(&facts, 8192, None).needed_bytes, needed);
        let at = |avail: u64| estimate(&facts, 8192, Some(avail)).verdict;
        assert_eq!(at(4 << 30), Verdict::Fits);
        // 70% of 600,000,000 is 420,000,000: just under what is needed.
        assert_eq!(at(600_000_000), Verdict::Tight);
        assert_eq!(at(602_000_000), Verdict::Fits);
        assert_eq!(at(needed), Verdict::Tight);
        assert_eq!(at(needed - 1), Verdict::WontFit);
        assert_eq!(at(256 * MIB), Verdict::WontFit);
        let unknown = estimate(&facts, 8192, None);
        assert_eq!(unknown.verdict, Verdict::Unknown);
        assert_eq!(
            unknown.describe(),
            "needs 401.8 MiB; available memory is unknown on this system, \
             so whether it fits cannot be checked"
        );
    }

    #[test]
    fn meminfo_mem_available_is_read_in_bytes() {
        let text = "MemTotal:       131891940 kB\nMemFree:        2478560 kB\n\
                    MemAvailable:   120170540 kB\nBuffers:          123 kB\n";
        assert_eq!(parse_mem_available(text), Some(120_170_540 * 1024));
        assert_eq!(parse_mem_available("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: lots kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: 5 MB\n"), None);
        if cfg!(target_os = "linux") {
            let avail = available_memory().expect("MemAvailable on Linux");
            assert!(avail > 64 * MIB, "{avail}");
        } else {
            assert_eq!(available_memory(), None);
        }
        assert_eq!(available_from(Path::new("/no/such/meminfo")), None);
    }
}
