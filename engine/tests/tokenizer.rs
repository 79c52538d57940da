//! Tokenizer and chat-template fidelity against llama.cpp's recorded outputs
//! (`tests/data/llamacpp-*.json`, copied from `reference/`), on the two real test models.
//!
//! llama.cpp recorded `ids` with llama-server's `/tokenize`, which always parses special tokens:
//! `ids` is `encode_with(text, add_special = false, parse_special = true)` and
//! `ids_with_special` is `encode_with(text, true, true)`, i.e. `encode(text, true)`.

use std::path::PathBuf;
use std::sync::OnceLock;

use hearth_engine::gguf::GgufFile;
use hearth_engine::source::{self, GEMMA3_270M_Q4_K_M, PublishedModel, SMOLLM2_135M_Q4_1};
use hearth_engine::tokenizer::template::{self, TEMPLATE_FUEL};
use hearth_engine::tokenizer::{
    ChatMessage, ChatTemplate, TemplateError, TokenKind, Tokenizer, TokenizerError,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    tokenize: Vec<TokenizeCase>,
    templates: Vec<TemplateCase>,
    greedy: Vec<GreedyCase>,
}

#[derive(Deserialize)]
struct TokenizeCase {
    text: String,
    ids: Vec<u32>,
    ids_with_special: Vec<u32>,
}

#[derive(Deserialize)]
struct TemplateCase {
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    rendered: String,
}

#[derive(Deserialize)]
struct GreedyCase {
    prompt_text: String,
    prompt_ids: Vec<u32>,
    completion_ids: Vec<u32>,
    completion_text: String,
}

fn reference(file: &str) -> Reference {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Loaded {
    tokenizer: Tokenizer,
    template: ChatTemplate,
    reference: Reference,
}

fn load(model: &PublishedModel, reference_file: &str) -> Loaded {
    let path = source::fetch(model).unwrap_or_else(|e| panic!("fetching {}: {e}", model.name));
    let file = GgufFile::open(&path).unwrap();
    Loaded {
        tokenizer: Tokenizer::from_gguf(&file).unwrap(),
        template: ChatTemplate::from_gguf(&file).unwrap(),
        reference: reference(reference_file),
    }
}

fn smollm2() -> &'static Loaded {
    static CELL: OnceLock<Loaded> = OnceLock::new();
    CELL.get_or_init(|| {
        load(
            &SMOLLM2_135M_Q4_1,
            "llamacpp-smollm2-135m-instruct-q4_1.json",
        )
    })
}

fn gemma3() -> &'static Loaded {
    static CELL: OnceLock<Loaded> = OnceLock::new();
    CELL.get_or_init(|| load(&GEMMA3_270M_Q4_K_M, "llamacpp-gemma3-270m-q4_k_m.json"))
}

/// Every reference text encodes to llama.cpp's ids, with and without BOS; all mismatches are
/// reported at once. `ids` were recorded with special tokens parsed, so they are compared with
/// `encode_with(text, false, true)`; `encode(text, false)` (plain text) must give the same ids
/// except where the text spells a control token, which it must then leave as text.
fn assert_encode_matches_llamacpp(m: &Loaded) -> usize {
    let t = &m.tokenizer;
    let mut failures = Vec::new();
    let mut spelled_control = 0;
    for case in &m.reference.tokenize {
        let parsed = t.encode_with(&case.text, false, true).unwrap();
        if parsed != case.ids {
            failures.push(format!(
                "{:?}\n  ours      {parsed:?}\n  llama.cpp {:?}",
                case.text, case.ids
            ));
        }
        let special = t.encode(&case.text, true).unwrap();
        if special != case.ids_with_special {
            failures.push(format!(
                "{:?} (special)\n  ours      {special:?}\n  llama.cpp {:?}",
                case.text, case.ids_with_special
            ));
        }
        let plain = t.encode(&case.text, false).unwrap();
        let is_control = |id: &u32| t.token_kind(*id) == Some(TokenKind::Control);
        if case.ids.iter().any(is_control) {
            spelled_control += 1;
            if plain.iter().any(is_control) || t.decode(&plain, false) != case.text {
                failures.push(format!("{:?} (plain text) gave {plain:?}", case.text));
            }
        } else if plain != case.ids {
            failures.push(format!(
                "{:?} (plain text)\n  ours      {plain:?}\n  llama.cpp {:?}",
                case.text, case.ids
            ));
        }
    }
    assert!(m.reference.tokenize.len() >= 25);
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    spelled_control
}

#[test]
fn smollm2_encode_matches_llamacpp_on_every_reference_text() {
    // One text spells `<|im_start|>` ... `<|im_end|>`.
    assert_eq!(assert_encode_matches_llamacpp(smollm2()), 1);
}

#[test]
fn gemma3_encode_matches_llamacpp_on_every_reference_text() {
    assert_eq!(assert_encode_matches_llamacpp(gemma3()), 0);
}

/// The prompts of llama.cpp's greedy runs encode to its prompt ids, and its completions decode to
/// its completion text.
fn assert_greedy_prompts_and_completions(m: &Loaded) {
    let t = &m.tokenizer;
    let mut failures = Vec::new();
    for case in &m.reference.greedy {
        let ids = t.encode(&case.prompt_text, true).unwrap();
        if ids != case.prompt_ids {
            failures.push(format!(
                "prompt {:?}: {ids:?} != {:?}",
                case.prompt_text, case.prompt_ids
            ));
        }
        let text = t.decode(&case.completion_ids, true);
        if text != case.completion_text {
            failures.push(format!(
                "completion {:?} != {:?}",
                text, case.completion_text
            ));
        }
    }
    assert!(!m.reference.greedy.is_empty());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn smollm2_greedy_prompts_encode_and_completions_decode_like_llamacpp() {
    assert_greedy_prompts_and_completions(smollm2());
}

#[test]
fn gemma3_greedy_prompts_encode_and_completions_decode_like_llamacpp() {
    assert_greedy_prompts_and_completions(gemma3());
}

/// llama.cpp's ids decode back to the reference text and re-encode to the same ids.
fn assert_round_trip(m: &Loaded) {
    let t = &m.tokenizer;
    let mut failures = Vec::new();
    for case in &m.reference.tokenize {
        let text = t.decode(&case.ids, false);
        if text != case.text {
            failures.push(format!("decode {:?} gave {text:?}", case.text));
        }
        let again = t.encode_with(&text, false, true).unwrap();
        if again != case.ids {
            failures.push(format!(
                "re-encode {:?}: {again:?} != {:?}",
                case.text, case.ids
            ));
        }
        // Skipping special tokens removes exactly the control tokens' text.
        let with_bos = t.decode(&case.ids_with_special, true);
        let expected = case
            .text
            .replace("<|im_start|>", "")
            .replace("<|im_end|>", "");
        let expected = if t.token_id("<|im_start|>").is_some() {
            expected
        } else {
            case.text.clone()
        };
        if with_bos != expected {
            failures.push(format!(
                "decode(skip_special) {:?} gave {with_bos:?}",
                case.text
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn smollm2_reference_ids_round_trip_through_decode() {
    assert_round_trip(smollm2());
}

#[test]
fn gemma3_reference_ids_round_trip_through_decode() {
    assert_round_trip(gemma3());
}

/// Feeding ids one at a time yields only valid UTF-8 chunks whose concatenation is `decode`.
fn assert_stream_matches_decode(t: &Tokenizer, texts: &[&str]) -> usize {
    let mut held_back = 0;
    for &text in texts {
        let ids = t.encode(text, true).unwrap();
        for skip_special in [false, true] {
            let mut stream = t.stream_decoder(skip_special);
            let mut joined = String::new();
            for &id in &ids {
                let chunk = stream.step(id);
                // `String` guarantees UTF-8; check nothing was replaced along the way.
                assert!(!chunk.contains('\u{FFFD}'), "{text:?}: chunk {chunk:?}");
                if !stream.pending_bytes().is_empty() {
                    held_back += 1;
                }
                joined.push_str(&chunk);
            }
            joined.push_str(&stream.finish());
            assert_eq!(
                joined,
                t.decode(&ids, skip_special),
                "{text:?} skip_special={skip_special}"
            );
        }
    }
    held_back
}

const STREAM_TEXTS: &[&str] = &[
    "Emoji 😀🚀🎉 and flags 🇫🇷",
    "日本語のテキスト 中文文本 한국어",
    "Ünïcödé ⟨math⟩ ∑ ∫ √ ≤ ≥ ≠ ∞",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓀀 🫠 ꙮ",
    "<|im_start|>user\nHi 👋<|im_end|>",
];

#[test]
fn smollm2_stream_decoder_holds_split_characters_and_matches_decode() {
    let held = assert_stream_matches_decode(&smollm2().tokenizer, STREAM_TEXTS);
    // Byte-level BPE splits these characters across tokens, so some bytes must have waited.
    assert!(held > 0);
}

#[test]
fn gemma3_stream_decoder_holds_split_characters_and_matches_decode() {
    let t = &gemma3().tokenizer;
    let held = assert_stream_matches_decode(t, STREAM_TEXTS);
    assert!(held > 0);
    // A character outside the vocabulary becomes byte-fallback tokens, one byte each.
    let ids = t.encode("𓀀", false).unwrap();
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert!(
        ids.iter()
            .all(|&id| t.token_kind(id) == Some(TokenKind::Byte))
    );
    let mut stream = t.stream_decoder(true);
    let chunks: Vec<String> = ids.iter().map(|&id| stream.step(id)).collect();
    assert_eq!(chunks, ["", "", "", "𓀀"]);
}

#[test]
fn stream_decoder_flushes_an_incomplete_character_as_replacement() {
    let t = &gemma3().tokenizer;
    let ids = t.encode("𓀀", false).unwrap();
    let mut stream = t.stream_decoder(true);
    assert_eq!(stream.step(ids[0]), "");
    assert_eq!(stream.step(ids[1]), "");
    assert_eq!(stream.finish(), "\u{FFFD}");
    assert_eq!(t.decode(&ids[..2], true), "\u{FFFD}");
}

#[test]
fn control_tokens_are_plain_text_unless_parsing_special() {
    let t = &smollm2().tokenizer;
    let text = "<|im_start|>user\nHi<|im_end|>";
    let parsed = t.encode(text, true).unwrap();
    assert_eq!(parsed, [1, 4093, 198, 26843, 2]);
    let literal = t.encode(text, false).unwrap();
    assert!(
        !literal.contains(&1) && !literal.contains(&2),
        "{literal:?}"
    );
    assert_eq!(t.decode(&literal, true), text);
    // Gemma's user-defined tokens (whitespace runs, HTML tags) are matched either way.
    let g = &gemma3().tokenizer;
    let newlines = g.encode("a\n\n\nb", false).unwrap();
    assert_eq!(newlines, g.encode_with("a\n\n\nb", false, true).unwrap());
    assert_eq!(
        newlines[1], 109,
        "three newlines are one user-defined token"
    );
    assert_eq!(g.encode("<html>", false).unwrap(), [217]);
    assert_eq!(g.encode("<start_of_turn>", true).unwrap(), [2, 105]);
    assert_eq!(
        g.encode_with("<start_of_turn>", false, true).unwrap(),
        [105]
    );
    let literal = g.encode("<start_of_turn>", false).unwrap();
    assert!(!literal.contains(&105), "{literal:?}");
}

#[test]
fn special_ids_and_end_of_generation_follow_llamacpp() {
    let s = &smollm2().tokenizer;
    assert_eq!(
        (s.bos_id(), s.eos_id(), s.adds_bos()),
        (Some(1), Some(2), false)
    );
    assert_eq!(s.vocab_size(), 49152);
    assert!(s.is_eog(2) && s.is_eog(0), "<|im_end|> and <|endoftext|>");
    assert!(!s.is_eog(1) && !s.is_eog(504));
    assert_eq!(s.token_text(1), Some("<|im_start|>"));
    assert_eq!(s.token_bytes(216), Some(&b" "[..]));

    let g = &gemma3().tokenizer;
    assert_eq!(
        (g.bos_id(), g.eos_id(), g.adds_bos()),
        (Some(2), Some(1), true)
    );
    assert_eq!(g.vocab_size(), 262144);
    let end_of_turn = g.token_id("<end_of_turn>").unwrap();
    assert_eq!(end_of_turn, 106);
    assert!(g.is_eog(1) && g.is_eog(end_of_turn));
    assert!(!g.is_eog(2) && !g.is_eog(105));
    assert_eq!(
        g.token_bytes(236743),
        Some(&b" "[..]),
        "'▁' decodes to a space"
    );
    assert_eq!(
        g.token_bytes(g.token_id("<0x0A>").unwrap()),
        Some(&b"\n"[..])
    );
    assert_eq!(g.decode(&[2, 9259, 1902, 236888, 1], true), "Hello world!");
    assert_eq!(
        g.decode(&[2, 9259, 1902, 236888, 1], false),
        "<bos>Hello world!<eos>"
    );
    assert_eq!(g.decode(&[u32::MAX], false), "\u{FFFD}");
}

#[test]
fn inner_tokenizers_tokenizer_agrees_on_reference_texts() {
    for m in [smollm2(), gemma3()] {
        let inner = m.tokenizer.inner().unwrap();
        for case in &m.reference.tokenize {
            let enc = inner.encode(case.text.as_str(), true).unwrap();
            assert_eq!(
                enc.get_ids(),
                case.ids_with_special.as_slice(),
                "{:?}",
                case.text
            );
            let text = inner.decode(&case.ids, false).unwrap();
            assert_eq!(text, case.text);
        }
    }
}

#[test]
fn smollm2_chat_template_renders_every_reference_conversation() {
    let m = smollm2();
    assert!(!m.reference.templates.is_empty());
    for case in &m.reference.templates {
        let out = m
            .template
            .render(&case.messages, case.add_generation_prompt)
            .unwrap();
        assert_eq!(out, case.rendered);
    }
    // The rendered prompt tokenizes to llama.cpp's prompt ids.
    let case = &m.reference.templates[0];
    let greedy = &m.reference.greedy[0];
    assert_eq!(case.rendered, greedy.prompt_text);
    assert_eq!(
        m.tokenizer.encode_chat(&case.rendered).unwrap(),
        greedy.prompt_ids
    );
}

#[test]
fn gemma3_without_template_uses_builtin_gemma_turns() {
    let m = gemma3();
    let msgs = [
        ChatMessage::system("Be brief."),
        ChatMessage::user("Hi!"),
        ChatMessage::assistant("Hello."),
        ChatMessage::user("  Name a color.  "),
    ];
    let out = m.template.render(&msgs, true).unwrap();
    assert_eq!(
        out,
        "<bos><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n\
         <start_of_turn>user\nName a color.<end_of_turn>\n<start_of_turn>model\n"
    );
    let ids = m.tokenizer.encode_chat(&out).unwrap();
    assert_eq!(
        ids.iter().filter(|&&id| id == 2).count(),
        1,
        "one BOS: {ids:?}"
    );
    assert_eq!(&ids[..3], &[2, 105, 2364], "<bos><start_of_turn>user");
    assert_eq!(ids, m.tokenizer.encode_with(&out, false, true).unwrap());
}

#[test]
fn raise_exception_in_a_template_names_its_message() {
    let err = gemma3()
        .template
        .render(&[ChatMessage::assistant("I speak first")], true)
        .unwrap_err();
    match &err {
        TemplateError::Raised { message, .. } => {
            assert_eq!(
                message,
                "Conversation roles must alternate user/assistant/user/assistant/..."
            )
        }
        other => panic!("expected Raised, got {other:?}"),
    }
    assert!(err.to_string().contains("gemma-3-270m-q4_k_m"), "{err}");
    let custom = ChatTemplate::new("m", "{{ raise_exception('no system role') }}", "", "").unwrap();
    let err = custom.render(&[], false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "m: the chat template rejected the conversation: no system role"
    );
}

#[test]
fn bad_tokenizer_metadata_gives_named_errors() {
    let path = source::fetch(&SMOLLM2_135M_Q4_1).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let mut meta = file.tokenizer_meta().unwrap();
    meta.pre = Some("no-such-pre".into());
    let err = Tokenizer::from_meta(&meta, "llama").unwrap_err();
    assert!(matches!(err, TokenizerError::UnknownPreTokenizer { .. }));
    assert!(
        err.to_string()
            .starts_with("llama: tokenizer.ggml.pre 'no-such-pre'"),
        "{err}"
    );
    meta.pre = Some("smollm".into());
    meta.bos_id = Some(49152);
    let err = Tokenizer::from_meta(&meta, "llama").unwrap_err();
    assert_eq!(
        err.to_string(),
        "llama: tokenizer.ggml.bos_token_id 49152 is outside the vocabulary of 49152"
    );
    meta.bos_id = Some(1);
    meta.merges = None;
    let err = Tokenizer::from_meta(&meta, "llama").unwrap_err();
    assert_eq!(err.to_string(), "llama: tokenizer.ggml.merges is missing");
    meta.model = "bert".into();
    let err = Tokenizer::from_meta(&meta, "llama").unwrap_err();
    assert_eq!(
        err.to_string(),
        "llama: tokenizer.ggml.model 'bert' is not supported (supported: gpt2, llama)"
    );
}

#[test]
fn tokenizer_and_template_can_move_to_the_engine_thread() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Tokenizer>();
    shareable::<ChatTemplate>();
}

#[test]
fn long_texts_decode_back_exactly() {
    for m in [smollm2(), gemma3()] {
        let t = &m.tokenizer;
        let mut text = String::new();
        while text.len() < 35_000 {
            for case in &m.reference.tokenize {
                text.push_str(&case.text);
                text.push('\n');
            }
        }
        let ids = t.encode(&text, false).unwrap();
        assert!(ids.len() > 5_000, "{}: {} tokens", t.name(), ids.len());
        assert_eq!(t.decode(&ids, false), text, "{}", t.name());
    }
}

/// Both vocabularies are lossless for the text they can represent (byte-level BPE, and
/// SentencePiece with byte fallback and no space prefix): it decodes back from its ids exactly,
/// special-looking text included. SmolLM2's vocabulary lacks 21 of the 256 byte tokens (lead
/// bytes 0xF1/0xF2 among them, so U+40000..U+BFFFF); like llama.cpp, Hearth drops such bytes.
#[test]
fn random_texts_round_trip_through_encode_and_decode() {
    let mut rng = fastrand::Rng::with_seed(0x7e57);
    let ranges = [
        ('a', 'z'),
        (' ', '@'),
        ('\t', '\r'),
        ('\u{80}', '\u{2ff}'),
        ('\u{400}', '\u{4ff}'),
        ('\u{4e00}', '\u{9fff}'),
        ('\u{1f300}', '\u{1faff}'),
        ('\u{e000}', '\u{e0ff}'),
        ('\u{10000}', '\u{3ffff}'),
        ('\u{c0000}', '\u{10ffff}'),
    ];
    let specials = [
        "<|im_start|>",
        "<|im_end|>",
        "<bos>",
        "<start_of_turn>",
        "\n\n",
        "    ",
    ];
    for m in [smollm2(), gemma3()] {
        let t = &m.tokenizer;
        for case in 0..400 {
            let mut text = String::new();
            for _ in 0..rng.usize(1..30) {
                if rng.u8(0..10) == 0 {
                    text.push_str(specials[rng.usize(..specials.len())]);
                } else {
                    let (lo, hi) = ranges[rng.usize(..ranges.len())];
                    text.push(rng.char(lo..=hi));
                }
            }
            let ids = t.encode(&text, false).unwrap();
            assert_eq!(
                t.decode(&ids, false),
                text,
                "{} case {case}: {ids:?}",
                t.name()
            );
            let mut stream = t.stream_decoder(false);
            let streamed: String = ids.iter().map(|&id| stream.step(id)).collect();
            assert_eq!(
                streamed + &stream.finish(),
                text,
                "{} case {case}",
                t.name()
            );
        }
    }
    // U+81785 is F2 81 9E 85: SmolLM2 has no token for 0xF2, and llama.cpp drops that byte.
    let smol = &smollm2().tokenizer;
    assert_eq!(smol.encode("\u{81785}", false).unwrap(), [219, 248, 223]);
    let gemma = &gemma3().tokenizer;
    let ids = gemma.encode("\u{81785}", false).unwrap();
    assert_eq!(gemma.decode(&ids, false), "\u{81785}");
}

/// A conversation of `n` alternating user/assistant turns of `len` bytes each.
fn long_conversation(n: usize, len: usize) -> Vec<ChatMessage> {
    (0..n)
        .map(|i| {
            let text = "word ".repeat(len / 5);
            if i % 2 == 0 {
                ChatMessage::user(text)
            } else {
                ChatMessage::assistant(text)
            }
        })
        .collect()
}

/// A template that loops (almost) forever is refused when it loads, by name, well within a
/// second (the time is printed; the bound is minijinja's fuel, not a clock).
#[test]
fn a_template_that_never_ends_runs_out_of_fuel_at_load() {
    let hang =
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}";
    let start = std::time::Instant::now();
    let err = ChatTemplate::new("hostile.gguf", hang, "", "").unwrap_err();
    eprintln!("out of fuel after {:?}", start.elapsed());
    assert!(
        matches!(err, TemplateError::OutOfFuel { fuel, .. } if fuel == TEMPLATE_FUEL),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "hostile.gguf: the chat template ran out of its budget of {TEMPLATE_FUEL} instructions (a loop that does not end, or one far too long)"
        )
    );
}

/// A template that prints gigabytes stops at its output cap instead of filling memory.
#[test]
fn a_template_that_prints_gigabytes_stops_at_its_output_cap() {
    // 100,000 x 100 kB = 10 GB if nothing stopped it.
    let flood = "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}";
    let err = ChatTemplate::new("flood.gguf", flood, "", "").unwrap_err();
    let TemplateError::TooLarge { limit, .. } = err else {
        panic!("expected TooLarge, got {err:?}");
    };
    assert!((1 << 20..2 << 20).contains(&limit), "{limit}");
    assert_eq!(
        err.to_string(),
        format!("flood.gguf: the chat template's output passed its limit of {limit} bytes")
    );
}

/// A template that behaves on the load check but turns hostile on a longer conversation is
/// stopped when that conversation is rendered, with the same named errors.
#[test]
fn a_template_hostile_only_to_long_conversations_fails_at_render() {
    let sly = "{% if messages | length > 6 %}{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}";
    let template = ChatTemplate::new("sly.gguf", sly, "", "").unwrap();
    let short = long_conversation(4, 50);
    assert_eq!(template.render(&short, true).unwrap().len(), 4 * 50);
    let err = template
        .render(&long_conversation(8, 50), true)
        .unwrap_err();
    assert!(matches!(err, TemplateError::OutOfFuel { .. }), "{err:?}");
}

/// Real templates stay far inside the limits on a long conversation: 200 turns of 2 kB
/// (400 kB of text) render in full with both test models' templates and the built-in ones.
#[test]
fn real_templates_render_long_conversations_within_the_limits() {
    let conversation = long_conversation(200, 2000);
    let text_bytes: usize = conversation.iter().map(|m| m.content.len()).sum();
    for (name, template) in [
        ("SmolLM2", &smollm2().template),
        ("Gemma 3", &gemma3().template),
    ] {
        let out = template.render(&conversation, true).unwrap();
        assert!(out.len() > text_bytes, "{name}: {} bytes", out.len());
    }
    for (name, source) in [
        ("chatml", template::CHATML_TEMPLATE),
        ("gemma", template::GEMMA_TEMPLATE),
    ] {
        let template = ChatTemplate::new(name, source, "<bos>", "<eos>").unwrap();
        let out = template.render(&conversation, true).unwrap();
        assert!(out.len() > text_bytes, "{name}: {} bytes", out.len());
    }
}

/// A harmony vocabulary (gpt-oss) as llama.cpp reads it: the message markers decode to their
/// text even when special tokens are skipped, and `<|end|>` (the end of one message) does not
/// end generation where `<|return|>` and `<|call|>` do. Built on SmolLM2's real vocabulary with
/// the harmony control tokens added.
#[test]
fn harmony_markers_are_shown_and_end_is_not_end_of_generation() {
    let path = source::fetch(&SMOLLM2_135M_Q4_1).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let mut meta = file.tokenizer_meta().unwrap();
    let markers = [
        "<|start|>",
        "<|channel|>",
        "<|message|>",
        "<|constrain|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
    ];
    let first = meta.tokens.len() as u32;
    let types = meta
        .token_types
        .get_or_insert_with(|| vec![1; meta.tokens.len()]);
    for m in markers {
        meta.tokens.push(m.to_string());
        types.push(3); // control
    }
    meta.eos_id = Some(first + 5); // <|return|>
    let tok = Tokenizer::from_meta(&meta, "gpt-oss").unwrap();
    let id = |m: &str| first + markers.iter().position(|x| *x == m).unwrap() as u32;
    let ids: Vec<u32> = ["<|channel|>", "<|message|>", "<|end|>", "<|start|>"]
        .iter()
        .map(|m| id(m))
        .collect();
    assert_eq!(
        tok.decode(&ids, true),
        "<|channel|><|message|><|end|><|start|>"
    );
    assert!(tok.is_eog(id("<|return|>")) && tok.is_eog(id("<|call|>")));
    assert!(!tok.is_eog(id("<|end|>")));
    // The rest stay control tokens: skipped in shown text.
    assert_eq!(tok.decode(&[id("<|return|>")], true), "");
}
