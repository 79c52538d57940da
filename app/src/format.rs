//! Human-readable numbers for terminal output.

use hearth_engine::api::{Route, Stats};

/// `1536` -> `"1.5 KiB"`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `134_515_008` -> `"134.5 M"`.
pub fn count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1} K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} M", n as f64 / 1e6),
        _ => format!("{:.2} B", n as f64 / 1e9),
    }
}

/// The stats line under an answer: where it ran and why, the prompt (and how much of it the
/// prefix cache held), the speed, the time to first token and why it ended.
pub fn answer_stats(route: &Route, stats: &Stats, finish: &str) -> String {
    format!(
        "route {} | prompt {} tokens ({} reused from cache) | generated {} tokens ({:.1} tok/s) | time to first token {:.0} ms | finish: {finish}",
        route.reason,
        stats.prompt_tokens,
        stats.reused_tokens,
        stats.generated_tokens,
        stats.tokens_per_s(),
        stats.time_to_first_token.as_secs_f64() * 1e3,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_sizes_and_counts() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(98_362_432), "93.8 MiB");
        assert_eq!(super::count(134_515_008), "134.5 M");
        assert_eq!(super::count(999), "999");
    }
}
