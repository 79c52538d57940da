//! The i-quant codebooks in WGSL, written from the same tables as the scalar code
//! (`quant::grids`): each grid row's element codes (16 bits: eight 2-bit or four 3-bit codes),
//! two rows per u32, with an accessor `<name>_row(r)` returning row `r`'s codes. The shaders
//! turn codes into values (`shaders/quant_iq*.wgsl`).

use crate::quant::grids::{
    IQ1S_CODES, IQ2S_CODES, IQ2XS_CODES, IQ2XXS_CODES, IQ3S_CODES, IQ3XXS_CODES,
};

const QUANT_IQ1: &str = include_str!("../../../../shaders/quant_iq1.wgsl");
const QUANT_IQ2: &str = include_str!("../../../../shaders/quant_iq2.wgsl");
const QUANT_IQ3: &str = include_str!("../../../../shaders/quant_iq3.wgsl");

/// `var<private> NAME_GRID: array<u32, n>` holding `codes` two per word, and `name_row(r)`.
fn grid(name: &str, codes: &[u16]) -> String {
    let words: Vec<String> = codes
        .chunks(2)
        .map(|p| {
            let hi = p.get(1).copied().unwrap_or(0);
            format!("{:#x}u", u32::from(p[0]) | u32::from(hi) << 16)
        })
        .collect();
    let n = words.len();
    let upper = format!("{}_GRID", name.to_uppercase());
    format!(
        "var<private> {upper}: array<u32, {n}> = array<u32, {n}>({});\n\
         fn {name}_row(r: u32) -> u32 {{\n    return ({upper}[r >> 1u] >> ((r & 1u) * 16u)) & 0xffffu;\n}}\n",
        words.join(", ")
    )
}

/// What format `f`'s `dq8_f` needs besides `quant.wgsl`: its family's dequantizers and their
/// codebooks (empty for the formats without one).
pub(super) fn family(f: &str) -> String {
    match f {
        "iq2_xxs" | "iq2_xs" | "iq2_s" => [
            grid("iq2xxs", &IQ2XXS_CODES),
            grid("iq2xs", &IQ2XS_CODES),
            grid("iq2s", &IQ2S_CODES),
            QUANT_IQ2.to_string(),
        ]
        .join("\n"),
        "iq3_xxs" | "iq3_s" => [
            grid("iq3xxs", &IQ3XXS_CODES),
            grid("iq3s", &IQ3S_CODES),
            QUANT_IQ3.to_string(),
        ]
        .join("\n"),
        "iq1_s" | "iq1_m" => [grid("iq1s", &IQ1S_CODES), QUANT_IQ1.to_string()].join("\n"),
        _ => String::new(),
    }
}
