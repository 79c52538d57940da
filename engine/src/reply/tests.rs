//! The reply reader on streams as models write them: split into tokens as the families'
//! tokenizers split them, and split every other way (one char at a time, whole), which must give
//! the same reasoning, answer and calls.

use super::*;

const THINK: ReasoningFormat = ReasoningFormat::Tags {
    open: "<think>",
    close: "</think>",
};

fn format(reasoning: ReasoningFormat, opened: bool, tools: Option<ToolFormat>) -> ReplyFormat {
    ReplyFormat {
        reasoning,
        opened,
        tools,
    }
}

/// (reasoning, answer, calls as (name, arguments)) of a reply streamed as `deltas`, checking
/// that the pieces' order is reasoning first (no answer text before the last reasoning).
fn read(format: ReplyFormat, deltas: &[&str]) -> (String, String, Vec<(String, String)>) {
    let mut reader = ReplyReader::new(format);
    let mut pieces = Vec::new();
    for d in deltas {
        pieces.extend(reader.push(d));
    }
    pieces.extend(reader.finish());
    let (mut reasoning, mut answer) = (String::new(), String::new());
    for p in pieces {
        match p.kind {
            TextKind::Reasoning => reasoning.push_str(&p.text),
            TextKind::Answer => answer.push_str(&p.text),
        }
    }
    let calls = reader
        .take_calls()
        .into_iter()
        .map(|c| (c.name, c.arguments))
        .collect();
    (reasoning, answer, calls)
}

#[test]
fn empty_text_gives_no_piece() {
    for f in [
        format(ReasoningFormat::None, false, None),
        format(THINK, true, Some(ToolFormat::Hermes)),
        format(ReasoningFormat::Harmony, false, Some(ToolFormat::Harmony)),
    ] {
        let mut reader = ReplyReader::new(f);
        assert_eq!(reader.push(""), vec![]);
        assert_eq!(reader.finish(), vec![]);
    }
}

/// [`read`] for the token split given, one char at a time and in one piece, all equal.
fn read_every_way(format: ReplyFormat, tokens: &[&str]) -> (String, String, Vec<(String, String)>) {
    let whole: String = tokens.concat();
    let by_token = read(format, tokens);
    let chars: Vec<String> = whole.chars().map(String::from).collect();
    let by_char = read(
        format,
        &chars.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let at_once = read(format, &[&whole]);
    assert_eq!(by_token, by_char, "{whole:?}");
    assert_eq!(by_token, at_once, "{whole:?}");
    by_token
}

#[test]
fn qwen3_reasoning_is_split_from_the_answer() {
    // Qwen3's output tokens for a short reply (`<think>` and `</think>` are single tokens).
    let tokens = [
        "<think>", "\n", "Okay", ",", " the", " user", " asks", " 2", "+", "2", ".", "\n",
        "</think>", "\n\n", "2", " +", " 2", " =", " **", "4", "**", ".",
    ];
    let (reasoning, answer, calls) = read_every_way(format(THINK, false, None), &tokens);
    assert_eq!(reasoning, "Okay, the user asks 2+2.");
    assert_eq!(answer, "2 + 2 = **4**.");
    assert!(calls.is_empty());
}

#[test]
fn a_close_tag_split_across_tokens_is_found() {
    // A vocabulary without a `</think>` token writes it in pieces.
    let tokens = [
        "<", "think", ">", "Hmm", ".", "</", "th", "ink", ">", "Yes", ".",
    ];
    let (reasoning, answer, _) = read_every_way(format(THINK, false, None), &tokens);
    assert_eq!(reasoning, "Hmm.");
    assert_eq!(answer, "Yes.");
}

#[test]
fn a_prompt_that_opened_the_tag_makes_the_reply_start_in_reasoning() {
    assert!(THINK.opened_by("<|im_start|>assistant\n<think>\n"));
    assert!(!THINK.opened_by("<|im_start|>assistant\n"));
    let tokens = [
        "The", " sky", " is", " blue", ".", "\n", "</think>", "\n\n", "Blue", ".",
    ];
    let (reasoning, answer, _) = read_every_way(format(THINK, true, None), &tokens);
    assert_eq!(reasoning, "The sky is blue.");
    assert_eq!(answer, "Blue.");
}

#[test]
fn a_reply_that_never_closes_its_reasoning_is_all_reasoning() {
    let tokens = ["Let", " me", " think", " about", " it", " <", "/th"];
    let (reasoning, answer, _) = read_every_way(format(THINK, true, None), &tokens);
    assert_eq!(reasoning, "Let me think about it </th");
    assert_eq!(answer, "");
    let (reasoning, answer, _) = read_every_way(format(THINK, false, None), &["<think>", "Hmm"]);
    assert_eq!((reasoning.as_str(), answer.as_str()), ("Hmm", ""));
}

#[test]
fn a_reply_without_the_tag_is_all_answer() {
    let tokens = ["  Paris", " is", " the", " capital", "."];
    let (reasoning, answer, _) = read_every_way(format(THINK, false, None), &tokens);
    assert_eq!(reasoning, "");
    assert_eq!(answer, "  Paris is the capital.");
    // A start of the tag that turns out not to be one is text.
    let (_, answer, _) = read_every_way(format(THINK, false, None), &["<th", "ree>"]);
    assert_eq!(answer, "<three>");
    let (_, answer, _) = read_every_way(format(THINK, false, None), &["<thi"]);
    assert_eq!(answer, "<thi");
    // The tag counts only at the start.
    let (reasoning, answer, _) =
        read_every_way(format(THINK, false, None), &["Use", " <think>", " tags"]);
    assert_eq!(
        (reasoning.as_str(), answer.as_str()),
        ("", "Use <think> tags")
    );
}

#[test]
fn ministral_think_tags() {
    let f = ReasoningFormat::detect("{{ '[THINK]' + thinking + '[/THINK]' }}");
    let tokens = ["[THINK]", "Short", ".", "[/THINK]", "Answer", "."];
    let (reasoning, answer, _) = read_every_way(format(f, false, None), &tokens);
    assert_eq!((reasoning.as_str(), answer.as_str()), ("Short.", "Answer."));
}

#[test]
fn harmony_channels_split_reasoning_answer_and_calls() {
    // gpt-oss after `<|start|>assistant`: analysis, then final (`<|return|>` ends generation).
    let tokens = [
        "<|channel|>",
        "analysis",
        "<|message|>",
        "User",
        " asks",
        " capital",
        " of",
        " France",
        ".",
        "<|end|>",
        "<|start|>",
        "assistant",
        "<|channel|>",
        "final",
        "<|message|>",
        "Paris",
        ".",
    ];
    let (reasoning, answer, calls) = read_every_way(
        format(ReasoningFormat::Harmony, false, Some(ToolFormat::Harmony)),
        &tokens,
    );
    assert_eq!(reasoning, "User asks capital of France.");
    assert_eq!(answer, "Paris.");
    assert!(calls.is_empty());
    // A tool call: analysis, then a commentary message to functions.get_weather (`<|call|>`
    // ends generation).
    let tokens = [
        "<|channel|>",
        "analysis",
        "<|message|>",
        "Need",
        " weather",
        ".",
        "<|end|>",
        "<|start|>",
        "assistant",
        "<|channel|>",
        "commentary",
        " to",
        "=",
        "functions",
        ".get",
        "_weather",
        " ",
        "<|constrain|>",
        "json",
        "<|message|>",
        "{\"",
        "city",
        "\":\"",
        "Paris",
        "\"}",
    ];
    let (reasoning, answer, calls) = read_every_way(
        format(ReasoningFormat::Harmony, false, Some(ToolFormat::Harmony)),
        &tokens,
    );
    assert_eq!(reasoning, "Need weather.");
    assert_eq!(answer, "");
    assert_eq!(
        calls,
        vec![(
            "get_weather".to_string(),
            "{\"city\":\"Paris\"}".to_string()
        )]
    );
}

#[test]
fn harmony_without_channels_is_plain_answer() {
    let (reasoning, answer, _) = read_every_way(
        format(ReasoningFormat::Harmony, false, None),
        &["Hello", " there"],
    );
    assert_eq!((reasoning.as_str(), answer.as_str()), ("", "Hello there"));
}

#[test]
fn hermes_tool_calls_are_parsed_and_kept_out_of_the_answer() {
    // Qwen3 with tools: reasoning, a sentence, then two calls.
    let tokens = [
        "<think>",
        "\n",
        "Weather",
        " needed",
        ".",
        "\n",
        "</think>",
        "\n\n",
        "Let",
        " me",
        " check",
        ".",
        "\n",
        "<tool_call>",
        "\n",
        "{\"",
        "name",
        "\":",
        " \"",
        "get",
        "_weather",
        "\",",
        " \"",
        "arguments",
        "\":",
        " {\"",
        "city",
        "\":",
        " \"",
        "Paris",
        "\"}}",
        "\n",
        "</tool_call>",
        "\n",
        "<tool_call>",
        "\n",
        "{\"name\": \"get_time\", \"arguments\": {}}",
        "\n",
        "</tool_call>",
    ];
    let (reasoning, answer, calls) =
        read_every_way(format(THINK, false, Some(ToolFormat::Hermes)), &tokens);
    assert_eq!(reasoning, "Weather needed.");
    assert_eq!(answer, "Let me check.\n");
    assert_eq!(
        calls,
        vec![
            ("get_weather".into(), r#"{"city":"Paris"}"#.into()),
            ("get_time".into(), "{}".into())
        ]
    );
}

#[test]
fn qwen35_xml_tool_calls() {
    // Qwen3.5's format, as its template asks for it.
    let tokens = [
        "<think>",
        "\n",
        "Call",
        " it",
        ".",
        "\n",
        "</think>",
        "\n\n",
        "<tool_call>",
        "\n",
        "<function=",
        "get",
        "_weather",
        ">",
        "\n",
        "<parameter=",
        "city",
        ">",
        "\n",
        "New",
        " York",
        "\n",
        "</parameter>",
        "\n",
        "<parameter=",
        "days",
        ">",
        "\n",
        "3",
        "\n",
        "</parameter>",
        "\n",
        "</function>",
        "\n",
        "</tool_call>",
    ];
    let (reasoning, answer, calls) =
        read_every_way(format(THINK, false, Some(ToolFormat::QwenXml)), &tokens);
    assert_eq!((reasoning.as_str(), answer.as_str()), ("Call it.", ""));
    assert_eq!(
        calls,
        vec![(
            "get_weather".into(),
            r#"{"city":"New York","days":3}"#.into()
        )]
    );
}

#[test]
fn gemma4_tool_calls() {
    // Gemma 4's notation, as its template writes a past call (`<|"|>`, `<|tool_call>` and
    // `<tool_call|>` are single user-defined tokens).
    let tokens = [
        "<|tool_call>",
        "call",
        ":",
        "get_weather",
        "{",
        "city",
        ":",
        "<|\"|>",
        "Paris",
        ",",
        " France",
        "<|\"|>",
        ",",
        "days",
        ":",
        "3",
        ",",
        "hourly",
        ":",
        "false",
        ",",
        "at",
        ":",
        "{",
        "lat",
        ":",
        "48.8",
        "}",
        ",",
        "tags",
        ":[",
        "<|\"|>",
        "a",
        "<|\"|>",
        "]}",
        "<tool_call|>",
    ];
    let (_, answer, calls) = read_every_way(
        format(ReasoningFormat::None, false, Some(ToolFormat::Gemma4)),
        &tokens,
    );
    assert_eq!(answer, "");
    assert_eq!(
        calls,
        vec![(
            "get_weather".into(),
            r#"{"city":"Paris, France","days":3,"hourly":false,"at":{"lat":48.8},"tags":["a"]}"#
                .into()
        )]
    );
}

#[test]
fn a_broken_call_goes_back_to_the_answer() {
    let tokens = ["Sure", ": ", "<tool_call>", "{\"name\": ", "oops"];
    let (_, answer, calls) =
        read_every_way(format(THINK, false, Some(ToolFormat::Hermes)), &tokens);
    assert!(calls.is_empty());
    assert_eq!(answer, "Sure: <tool_call>{\"name\": oops");
}

#[test]
fn mistral_tool_calls_both_forms() {
    let tokens = [
        "[TOOL_CALLS]",
        "get",
        "_weather",
        "[ARGS]",
        "{\"",
        "city",
        "\": \"",
        "Paris",
        "\"}",
    ];
    let (_, answer, calls) = read_every_way(
        format(ReasoningFormat::None, false, Some(ToolFormat::Mistral)),
        &tokens,
    );
    assert_eq!(answer, "");
    assert_eq!(
        calls,
        vec![("get_weather".into(), r#"{"city":"Paris"}"#.into())]
    );
    let old =
        r#"[TOOL_CALLS][{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]"#;
    let (_, _, calls) = read_every_way(
        format(ReasoningFormat::None, false, Some(ToolFormat::Mistral)),
        &[old],
    );
    assert_eq!(
        calls,
        vec![("a".into(), r#"{"x":1}"#.into()), ("b".into(), "{}".into())]
    );
}

#[test]
fn llama3_json_tool_calls() {
    let tokens = [
        "{\"",
        "name",
        "\":",
        " \"",
        "get_weather",
        "\",",
        " \"",
        "parameters",
        "\":",
        " {\"",
        "city",
        "\":",
        " \"",
        "Paris",
        "\"}}",
    ];
    let f = format(ReasoningFormat::None, false, Some(ToolFormat::Llama3));
    let (_, answer, calls) = read_every_way(f, &tokens);
    assert_eq!(answer, "");
    assert_eq!(
        calls,
        vec![("get_weather".into(), r#"{"city":"Paris"}"#.into())]
    );
    // A JSON answer that is not a call stays an answer.
    let (_, answer, calls) = read_every_way(f, &["{\"a\":", " 1}"]);
    assert!(calls.is_empty());
    assert_eq!(answer, "{\"a\": 1}");
    let (_, answer, calls) = read_every_way(f, &["Hi", " {\"name\": \"x\"}"]);
    assert!(calls.is_empty());
    assert_eq!(answer, "Hi {\"name\": \"x\"}");
}

#[test]
fn formats_are_read_from_the_real_templates() {
    let t = |name: &str| {
        std::fs::read_to_string(format!(
            "{}/tests/data/templates/{name}.jinja",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let qwen = t("Qwen3.5-4B");
    assert_eq!(ReasoningFormat::detect(&qwen), THINK);
    assert_eq!(ToolFormat::detect(&qwen), ToolFormat::QwenXml);
    let oss = t("openai-gpt-oss-120b");
    assert_eq!(ReasoningFormat::detect(&oss), ReasoningFormat::Harmony);
    assert_eq!(ToolFormat::detect(&oss), ToolFormat::Harmony);
    let ministral = t("mistralai-Ministral-3-14B-Reasoning-2512");
    assert_eq!(
        ReasoningFormat::detect(&ministral),
        ReasoningFormat::Tags {
            open: "[THINK]",
            close: "[/THINK]"
        }
    );
    assert_eq!(ToolFormat::detect(&ministral), ToolFormat::Mistral);
    assert_eq!(
        ReasoningFormat::detect(&t("HuggingFaceTB-SmolLM3-3B")),
        THINK
    );
    assert_eq!(
        ToolFormat::detect(&t("google-gemma-4-31B-it")),
        ToolFormat::Gemma4
    );
    let gemma = ReasoningFormat::detect(&t("google-gemma-4-31B-it"));
    assert_eq!(
        gemma,
        ReasoningFormat::Tags {
            open: "<|channel>thought",
            close: "<channel|>"
        }
    );
    // Gemma 4 with thinking: `<|channel>` and `<channel|>` are single (user-defined) tokens.
    let tokens = [
        "<|channel>",
        "thought",
        "\n",
        "Sky",
        " color",
        ".",
        "<channel|>",
        "Blue",
        ".",
    ];
    let (reasoning, answer, _) = read_every_way(format(gemma, false, None), &tokens);
    assert_eq!(
        (reasoning.as_str(), answer.as_str()),
        ("Sky color.", "Blue.")
    );
    // Thinking off: the generation prompt closes an empty thought channel.
    assert!(!gemma.opened_by("<|turn>model\n<|channel>thought\n<channel|>"));
    assert_eq!(
        ReasoningFormat::detect(&t("microsoft-Phi-3.5-mini-instruct")),
        ReasoningFormat::None
    );
}
