//! `hearth chat` as a script meets it: messages piped on stdin, answers on stdout, a stats line
//! per answer on stderr, and the conversation saved where the desktop app finds it.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use hearth_engine::source::SMOLLM2_135M_Q4_1;
use serde_json::Value;

use crate::cli::{model, path_str, stderr, stdout};

/// Starts `hearth chat` on SmolLM2 (CPU, greedy, answers of at most `n` tokens) with `data` as
/// the data folder and pipes for stdin, stdout and stderr.
fn spawn(data: &Path, n: &str, extra: &[&str]) -> Child {
    let smol = model(&SMOLLM2_135M_Q4_1);
    let mut args = vec![
        "chat",
        "-m",
        path_str(&smol),
        "--backend",
        "cpu",
        "--temp",
        "0",
        "-n",
        n,
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(&args)
        .env("HEARTH_DATA_DIR", data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hearth chat")
}

/// Runs `hearth chat` (answers of at most 16 tokens) with `input` on stdin.
fn chat(data: &Path, input: &str, extra: &[&str]) -> Output {
    let mut child = spawn(data, "16", extra);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The stats lines on stderr: (prompt tokens, tokens reused from the cache) of each answer.
fn stats_lines(err: &str) -> Vec<(usize, usize)> {
    err.lines()
        .filter(|l| l.starts_with("route local: "))
        .map(|l| {
            let prompt = l.split("| prompt ").nth(1).unwrap();
            let (count, rest) = prompt.split_once(" tokens (").unwrap();
            let reused = rest.split_once(" reused from cache").unwrap().0;
            (count.parse().unwrap(), reused.parse().unwrap())
        })
        .collect()
}

/// The conversation files in the data folder.
fn stored(data: &Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(data.join("conversations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect()
}

/// The visible thread of a stored conversation: (role, content, answer) from the active root.
fn thread(c: &Value) -> Vec<(String, String, Value)> {
    let nodes = c["nodes"].as_array().unwrap();
    let mut out = Vec::new();
    let mut next = c["active_root"].as_u64();
    while let Some(id) = next {
        let n = nodes.iter().find(|n| n["id"] == id).unwrap();
        out.push((
            n["role"].as_str().unwrap().to_string(),
            n["content"].as_str().unwrap().to_string(),
            n["answer"].clone(),
        ));
        next = n["active_child"].as_u64();
    }
    out
}

#[test]
fn chat_pipes_two_answers_and_reuses_the_first_turn_from_the_cache() {
    let data = tempfile::tempdir().unwrap();
    let out = chat(data.path(), "What is 2+2?\nAnd what is 3+3?\n", &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let stats = stats_lines(&err);
    assert_eq!(stats.len(), 2, "{err}");
    // The second prompt is the first turn and more; the cache holds the first turn.
    assert!(stats[1].0 > stats[0].0 + 10, "{stats:?}");
    assert!(stats[1].1 >= stats[0].0 - 16, "{stats:?}: {err}");
    assert!(stats[1].1 < stats[1].0, "{stats:?}");

    let conversations = stored(data.path());
    assert_eq!(conversations.len(), 1);
    let c = &conversations[0];
    assert_eq!(c["title"], "What is 2+2?");
    let t = thread(c);
    let roles: Vec<&str> = t.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(t[0].1, "What is 2+2?");
    assert_eq!(t[2].1, "And what is 3+3?");
    // Stdout holds exactly the two answers: no prompts or decorations.
    assert!(!t[1].1.trim().is_empty() && !t[3].1.trim().is_empty());
    assert_eq!(stdout(&out), format!("{}\n{}\n", t[1].1, t[3].1));
    for (turn, (_, _, answer)) in [(0, &t[1]), (1, &t[3])] {
        assert_eq!(answer["model"], "SmolLM2-135M-Instruct.Q4_1.gguf");
        assert_eq!(answer["route"]["target"], "local");
        let tokens = answer["tokens"].as_u64().unwrap();
        assert!((1..=16).contains(&tokens), "{answer}");
        assert!(["stop", "length"].contains(&answer["finish"].as_str().unwrap()));
        assert_eq!(
            answer["reused_tokens"].as_u64().unwrap() as usize,
            stats[turn].1
        );
    }
}

#[test]
fn chat_continues_a_stored_conversation_by_id() {
    let data = tempfile::tempdir().unwrap();
    let first = chat(data.path(), "What is 2+2?\nAnd what is 3+3?\n", &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let first_stats = stats_lines(&stderr(&first));
    let id = stored(data.path())[0]["id"].as_str().unwrap().to_string();

    let second = chat(
        data.path(),
        "What is 5+5?\n",
        &["--conversation", id.as_str()],
    );
    let err = stderr(&second);
    assert!(second.status.success(), "{err}");
    let stats = stats_lines(&err);
    assert_eq!(stats.len(), 1, "{err}");
    // The prompt holds the whole earlier thread, so it is longer than the last one of the first
    // run (which held all but its answer).
    assert!(
        stats[0].0 > first_stats[1].0 + 10,
        "{stats:?} {first_stats:?}"
    );

    let conversations = stored(data.path());
    assert_eq!(conversations.len(), 1, "the same conversation, continued");
    let t = thread(&conversations[0]);
    assert_eq!(t.len(), 6);
    assert_eq!(t[4].1, "What is 5+5?");
    assert_eq!(t[5].0, "assistant");
    assert_eq!(stdout(&second), format!("{}\n", t[5].1));

    let out = chat(data.path(), "Hi\n", &["--conversation", "no-such-id"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no conversation no-such-id"));
}

#[test]
fn chat_regenerate_adds_an_alternative_answer() {
    let data = tempfile::tempdir().unwrap();
    let out = chat(data.path(), "Name a color.\n/regenerate\n", &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let stats = stats_lines(&err);
    assert_eq!(stats.len(), 2, "{err}");
    // The same prompt again: all of it but the last token comes from the cache.
    assert_eq!(stats[1].0, stats[0].0);
    assert!(stats[1].1 >= stats[1].0 - 16, "{stats:?}");

    let c = &stored(data.path())[0];
    let nodes = c["nodes"].as_array().unwrap();
    let user = nodes.iter().find(|n| n["role"] == "user").unwrap();
    let answers: Vec<&Value> = nodes
        .iter()
        .filter(|n| n["role"] == "assistant" && n["parent"] == user["id"])
        .collect();
    assert_eq!(answers.len(), 2, "{c}");
    assert_eq!(
        user["active_child"], answers[1]["id"],
        "the new answer shows"
    );
    assert_eq!(thread(c).len(), 2);
}

#[test]
fn chat_commands_set_the_system_prompt_start_and_list_conversations() {
    let data = tempfile::tempdir().unwrap();
    let input = "/system Answer in one word.\nWhat is the capital of France?\n/new\n\
                 Say hello \\\nto me.\n/list\n/nonsense\n";
    let out = chat(data.path(), input, &[]);
    let err = stderr(&out);
    // The unknown command is reported and makes the exit status 1, after the rest ran.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unknown command /nonsense"), "{err}");
    assert_eq!(stats_lines(&err).len(), 2, "{err}");

    let conversations = stored(data.path());
    assert_eq!(conversations.len(), 2);
    let first = conversations
        .iter()
        .find(|c| c["title"] == "What is the capital of France?")
        .unwrap();
    assert_eq!(first["system_prompt"], "Answer in one word.");
    let second = conversations
        .iter()
        .find(|c| c["title"] == "Say hello")
        .unwrap();
    assert_eq!(thread(second)[0].1, "Say hello \nto me.");
    // /list names both, newest first, and marks the open one.
    let text = stdout(&out);
    let second_id = second["id"].as_str().unwrap();
    let first_id = first["id"].as_str().unwrap();
    let at = |id: &str| text.find(id).unwrap_or_else(|| panic!("{id} in {text}"));
    assert!(at(second_id) < at(first_id), "{text}");
    assert!(text.contains(&format!("* {second_id}")), "{text}");
}

#[cfg(unix)]
#[test]
fn chat_ctrl_c_stops_the_streaming_answer_and_keeps_what_it_wrote() {
    let data = tempfile::tempdir().unwrap();
    let mut child = spawn(data.path(), "4000", &[]);
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"Write a very long story about a dragon, in ten chapters.\n")
        .unwrap();
    stdin.flush().unwrap();
    // The answer is streaming once its first byte arrives; then Ctrl-C.
    let mut first = [0u8; 1];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    let kill = Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    assert!(kill.success());
    // The session goes on after the cancelled answer: end of input ends it normally.
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(err.contains("finish: cancelled"), "{err}");

    let t = thread(&stored(data.path())[0]);
    assert_eq!(t.len(), 2);
    let (role, content, answer) = &t[1];
    assert_eq!(role, "assistant");
    assert_eq!(answer["finish"], "cancelled");
    assert!(answer["tokens"].as_u64().unwrap() < 4000, "{answer}");
    let shown = String::from_utf8([&first[..], &out.stdout].concat()).unwrap();
    assert_eq!(shown, format!("{content}\n"));
}

#[test]
fn chat_with_a_bad_model_path_exits_2_naming_the_file() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["chat", "-m", "/no/such/model.gguf", "--backend", "cpu"])
        .env("HEARTH_DATA_DIR", data.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/no/such/model.gguf"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(stdout(&out).is_empty());
}
