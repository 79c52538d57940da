//! Tests of the conversation tree, the store's files and the settings file.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_engine::route::{Route, Target};
use hearth_engine::sched::{ContextPolicy, SeqStats};
use hearth_engine::tokenizer::ChatMessage;

use super::settings::{BackendPreference, Sampling, Settings, Theme};
use super::store::{
    DATA_DIR_ENV, DataDirs, Store, StoreError, TRASH_DAYS, atomic_write, is_valid_id, new_id,
};
use super::*;

mod reasoning;

fn contents(c: &Conversation) -> Vec<&str> {
    c.thread().iter().map(|n| n.content.as_str()).collect()
}

fn answer(finish: &str) -> Answer {
    Answer {
        model: "qwen2.5-0.5b".into(),
        route: RouteInfo {
            target: Target::Local,
            reason: "local: mode is local".into(),
        },
        ttft_ms: 120,
        tokens_per_s: 42.5,
        tokens: 17,
        reasoning_tokens: 0,
        reused_tokens: 9,
        finish: finish.into(),
    }
}

/// u1 -> a1; u2 under a1 -> a2.
fn two_turns() -> (Conversation, [NodeId; 4]) {
    let mut c = Conversation::new("1-test");
    let u1 = c.push_user("What is Rust?");
    let a1 = c.push_assistant("A language.", Some(answer("stop")));
    let u2 = c.push_user("Is it fast?");
    let a2 = c.push_assistant("Yes.", Some(answer("stop")));
    (c, [u1, a1, u2, a2])
}

/// Names of the files in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---- the tree ----

#[test]
fn push_builds_a_linear_thread_with_parents_and_active_children() {
    let (c, [u1, a1, u2, a2]) = two_turns();
    assert_eq!(
        contents(&c),
        ["What is Rust?", "A language.", "Is it fast?", "Yes."]
    );
    assert_eq!(c.node(u1).unwrap().parent, None);
    assert_eq!(c.node(a1).unwrap().parent, Some(u1));
    assert_eq!(c.node(u2).unwrap().parent, Some(a1));
    assert_eq!(c.node(a1).unwrap().active_child, Some(u2));
    assert_eq!(c.leaf(), Some(a2));
    assert_eq!(c.node(a2).unwrap().answer, Some(answer("stop")));
    assert_eq!(c.node(u1).unwrap().role, Role::User);
    assert_eq!(c.title, "What is Rust?");
}

#[test]
fn regenerate_adds_an_alternative_and_switch_moves_between_them() {
    let (mut c, [_, _, u2, a2]) = two_turns();
    let b = c
        .regenerate(a2, "Very fast.", Some(answer("length")))
        .unwrap();
    let d = c.regenerate(b, "It depends.", None).unwrap();
    assert_eq!(c.node(b).unwrap().parent, Some(u2));
    assert_eq!(contents(&c).last(), Some(&"It depends."));
    assert_eq!(c.alternatives(d).unwrap(), (2, 3));
    assert_eq!(c.alternatives(a2).unwrap(), (0, 3));

    assert_eq!(c.switch(d, 0).unwrap(), a2);
    assert_eq!(contents(&c).last(), Some(&"Yes."));
    assert_eq!(c.switch(a2, 1).unwrap(), b);
    assert_eq!(contents(&c).last(), Some(&"Very fast."));
    assert_eq!(c.thread().len(), 4);
    assert_eq!(
        c.switch(a2, 3),
        Err(EditError::NoAlternative {
            id: a2,
            index: 3,
            count: 3
        })
    );
    assert!(matches!(
        c.regenerate(u2, "x", None),
        Err(EditError::WrongRole { .. })
    ));
}

#[test]
fn edit_user_branches_and_the_old_branch_stays_reachable() {
    let (mut c, [u1, a1, u2, a2]) = two_turns();
    let e = c.edit_user(u2, "Is it safe?").unwrap();
    assert_eq!(c.node(e).unwrap().parent, Some(a1));
    assert_eq!(
        contents(&c),
        ["What is Rust?", "A language.", "Is it safe?"]
    );
    let answer_id = c.push_assistant("Memory-safe, yes.", None);
    assert_eq!(c.node(answer_id).unwrap().parent, Some(e));
    assert_eq!(c.alternatives(e).unwrap(), (1, 2));

    // Back to the old branch: its answer comes with it.
    c.switch(e, 0).unwrap();
    assert_eq!(
        contents(&c),
        ["What is Rust?", "A language.", "Is it fast?", "Yes."]
    );
    assert_eq!(c.leaf(), Some(a2));

    // Editing the first message branches at the root.
    let r = c.edit_user(u1, "What is Go?").unwrap();
    assert_eq!(c.node(r).unwrap().parent, None);
    assert_eq!(contents(&c), ["What is Go?"]);
    assert_eq!(c.alternatives(r).unwrap(), (1, 2));
    c.switch(r, 0).unwrap();
    assert_eq!(c.thread().len(), 4);
    assert!(matches!(
        c.edit_user(a1, "x"),
        Err(EditError::WrongRole { .. })
    ));
}

#[test]
fn delete_removes_the_subtree_and_repoints_the_active_child() {
    let (mut c, [u1, a1, u2, a2]) = two_turns();
    let b = c.regenerate(a2, "Very fast.", None).unwrap();
    let u3 = c.push_user("Thanks");
    assert_eq!(c.leaf(), Some(u3));

    // Deleting the active alternative shows the one before it; its subtree goes too.
    c.delete(b).unwrap();
    assert!(c.node(b).is_none() && c.node(u3).is_none());
    assert_eq!(c.node(u2).unwrap().active_child, Some(a2));
    assert_eq!(contents(&c).last(), Some(&"Yes."));
    assert_eq!(c.alternatives(a2).unwrap(), (0, 1));

    // Deleting the first of two shows the next one.
    let e = c.edit_user(u2, "Is it safe?").unwrap();
    c.switch(e, 0).unwrap();
    c.delete(u2).unwrap();
    assert!(c.node(a2).is_none());
    assert_eq!(c.node(a1).unwrap().active_child, Some(e));

    // Deleting the root empties the conversation.
    c.delete(u1).unwrap();
    assert!(c.is_empty());
    assert_eq!(c.active_root, None);
    assert!(c.thread().is_empty());
    assert_eq!(c.delete(u1), Err(EditError::NoNode(u1)));

    // Ids are never reused after a delete.
    let again = c.push_user("New start");
    assert!(again > e);
}

#[test]
fn chat_messages_follow_the_thread_with_the_system_prompt_first() {
    let (mut c, [_, _, _, a2]) = two_turns();
    assert_eq!(
        c.chat_messages("Be brief."),
        vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("What is Rust?"),
            ChatMessage::assistant("A language."),
            ChatMessage::user("Is it fast?"),
            ChatMessage::assistant("Yes."),
        ]
    );
    c.set_system_prompt(Some("Talk like a pirate.".into()));
    assert_eq!(
        c.chat_messages("Be brief.")[0],
        ChatMessage::system("Talk like a pirate.")
    );
    // An explicitly empty prompt sends none.
    c.set_system_prompt(Some(String::new()));
    assert_eq!(
        c.chat_messages("Be brief.")[0],
        ChatMessage::user("What is Rust?")
    );
    // The prompt to regenerate a2 ends with the question it answers.
    c.set_system_prompt(None);
    let prompt = c.prompt_for(a2, "").unwrap();
    assert_eq!(prompt.len(), 3);
    assert_eq!(prompt.last(), Some(&ChatMessage::user("Is it fast?")));
}

#[test]
fn default_title_is_the_first_line_trimmed_and_shortened() {
    assert_eq!(
        default_title("  \n  Hello   there  \nsecond"),
        "Hello there"
    );
    let long = "Explain the difference between ownership and borrowing in Rust with examples";
    let title = default_title(long);
    assert!(title.chars().count() <= TITLE_CHARS, "{title}");
    assert_eq!(title, "Explain the difference between ownership and…");
    let one_word = "x".repeat(100);
    assert_eq!(default_title(&one_word).chars().count(), TITLE_CHARS);

    let mut c = Conversation::new("t");
    assert_eq!(c.display_title(), "New conversation");
    c.push_user("First question");
    c.push_user("Second question");
    assert_eq!(c.title, "First question");
    c.rename("  My chat ");
    assert_eq!(c.title, "My chat");
    c.rename("");
    assert_eq!(c.title, "First question");
}

#[test]
fn matches_searches_title_and_every_branch_ignoring_case() {
    let (mut c, [_, _, u2, _]) = two_turns();
    c.edit_user(u2, "What about ÜNICODE?").unwrap();
    c.switch(u2, 0).unwrap();
    assert!(c.matches("rust"));
    assert!(c.matches("IS IT FAST"));
    assert!(c.matches("ünicode"), "hidden branches are searched too");
    assert!(c.matches(""));
    assert!(!c.matches("python"));
    c.rename("Systems languages");
    assert!(c.matches("systems"));
}

#[test]
fn answer_from_stats_fills_the_footer() {
    let stats = SeqStats {
        prompt_tokens: 30,
        reused_tokens: 12,
        generated_tokens: 11,
        time_to_first_token: Duration::from_millis(250),
        decode_time: Duration::from_secs(2),
        ..SeqStats::default()
    };
    let route = Route::cloud("local model unsure");
    let a = Answer::from_stats("gpt-4o-mini", &route, &stats, "stop");
    assert_eq!(a.ttft_ms, 250);
    assert_eq!(a.tokens, 11);
    assert_eq!(a.reasoning_tokens, 0);
    let thought = SeqStats {
        reasoning_tokens: 7,
        ..stats
    };
    assert_eq!(
        Answer::from_stats("m", &route, &thought, "stop").reasoning_tokens,
        7
    );
    assert_eq!(a.reused_tokens, 12);
    assert!((a.tokens_per_s - 5.0).abs() < 1e-9);
    assert_eq!(a.route.target, Target::Cloud);
    assert_eq!(a.route.reason, "cloud: local model unsure");
}

#[test]
fn validate_rejects_broken_trees_and_repairs_active_pointers() {
    let (mut c, [u1, a1, ..]) = two_turns();
    c.node_mut_for_test(a1).active_child = Some(999);
    c.active_root = None;
    c.validate().unwrap();
    assert_eq!(c.active_root, Some(u1));
    assert_eq!(c.thread().len(), 4);

    let (mut dup, [u1, a1, ..]) = two_turns();
    dup.node_mut_for_test(a1).id = u1;
    assert!(dup.validate().unwrap_err().contains("two messages"));

    let (mut cycle, [u1, a1, ..]) = two_turns();
    cycle.node_mut_for_test(u1).parent = Some(a1);
    assert!(
        cycle
            .validate()
            .unwrap_err()
            .contains("does not come before")
    );
}

impl Conversation {
    fn node_mut_for_test(&mut self, id: NodeId) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }
}

// ---- the store ----

#[test]
fn ids_sort_by_time_and_are_file_safe() {
    let a = new_id();
    std::thread::sleep(Duration::from_millis(2));
    let b = new_id();
    assert!(a < b, "{a} {b}");
    assert!(is_valid_id(&a) && a.len() == 20, "{a}");
    for bad in ["", "../x", "a/b", "a.json", "a b", &"x".repeat(65)] {
        assert!(!is_valid_id(bad), "{bad}");
    }
}

#[test]
fn save_and_load_round_trip_through_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut c = store.new_conversation();
    c.push_user("What is Rust?");
    c.push_assistant("A language.", Some(answer("stop")));
    c.set_system_prompt(Some("Be brief.".into()));
    store.save(&c).unwrap();

    let path = dir
        .path()
        .join("conversations")
        .join(format!("{}.json", c.id));
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["nodes"][1]["answer"]["route"]["target"], "local");

    let (loaded, problems) = Store::open(dir.path()).unwrap().load_all();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(loaded, vec![c]);
}

#[test]
fn atomic_write_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut c = store.new_conversation();
    for i in 0..5 {
        c.push_user(format!("message {i}"));
        store.save(&c).unwrap();
    }
    assert_eq!(names(store.conversations_dir()), [format!("{}.json", c.id)]);

    let file = dir.path().join("plain.txt");
    atomic_write(&file, b"one").unwrap();
    atomic_write(&file, b"two").unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"two");
    assert_eq!(names(dir.path()), ["conversations", "plain.txt", "trash"]);
}

#[test]
fn load_all_lists_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut ids = Vec::new();
    for (i, updated) in [300, 100, 200].into_iter().enumerate() {
        let mut c = store.new_conversation();
        c.push_user(format!("question {i}"));
        c.updated = updated;
        store.save(&c).unwrap();
        ids.push(c.id);
    }
    let (loaded, problems) = store.load_all();
    assert!(problems.is_empty());
    let order: Vec<u64> = loaded.iter().map(|c| c.updated).collect();
    assert_eq!(order, [300, 200, 100]);
    assert_eq!(loaded[0].id, ids[0]);
}

/// Writes `bytes` as conversation `id`'s file, as a broken program or disk might.
fn plant(store: &Store, id: &str, bytes: &[u8]) -> PathBuf {
    let path = store.conversations_dir().join(format!("{id}.json"));
    fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn corrupt_files_are_reported_skipped_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut good = store.new_conversation();
    good.push_user("I am fine");
    store.save(&good).unwrap();

    let mut v2 = serde_json::to_value(&good).unwrap();
    v2["version"] = 2.into();
    v2["id"] = "3-newer".into();
    let full = serde_json::to_vec(&good).unwrap();
    let planted = [
        ("1-garbage", vec![0xff, 0x00, 0x13, 0x37, 0xfe]),
        ("2-truncated", full[..full.len() / 2].to_vec()),
        ("3-newer", serde_json::to_vec(&v2).unwrap()),
    ];
    let paths: Vec<PathBuf> = planted
        .iter()
        .map(|(id, bytes)| plant(&store, id, bytes))
        .collect();

    let (loaded, problems) = store.load_all();
    assert_eq!(loaded, vec![good.clone()]);
    let reported: Vec<&PathBuf> = problems.iter().map(|p| &p.path).collect();
    assert_eq!(reported, paths.iter().collect::<Vec<_>>());
    for p in &problems {
        assert!(p.message.contains(&*p.path.to_string_lossy()), "{p}");
    }
    assert!(problems[2].message.contains("version 2"), "{}", problems[2]);

    // Saving others never touches them; saving over one, or deleting one, is refused.
    good.push_user("Still fine");
    store.save(&good).unwrap();
    let mut other = store.new_conversation();
    other.push_user("Another");
    store.save(&other).unwrap();
    let mut impostor = Conversation::new("2-truncated");
    impostor.push_user("overwrite?");
    assert!(matches!(
        store.save(&impostor),
        Err(StoreError::Unreadable { .. })
    ));
    assert!(matches!(
        store.delete("1-garbage"),
        Err(StoreError::Unreadable { .. })
    ));
    for ((_, bytes), path) in planted.iter().zip(&paths) {
        assert_eq!(&fs::read(path).unwrap(), bytes, "{}", path.display());
    }

    // A fresh store that never listed the files refuses as well.
    let mut fresh = Store::open(dir.path()).unwrap();
    let error = fresh.save(&impostor).unwrap_err();
    assert!(error.to_string().contains("2-truncated.json"), "{error}");
    assert_eq!(fs::read(&paths[1]).unwrap(), planted[1].1);
}

#[test]
fn a_file_whose_id_is_not_its_name_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut c = store.new_conversation();
    c.push_user("hi");
    let path = plant(&store, "copy-of-it", &serde_json::to_vec(&c).unwrap());
    let (loaded, problems) = store.load_all();
    assert!(loaded.is_empty());
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, path);
}

#[test]
fn delete_then_undo_restores_the_same_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut c = store.new_conversation();
    c.push_user("Keep me");
    c.push_assistant("Kept.", Some(answer("stop")));
    store.save(&c).unwrap();

    assert!(store.delete(&c.id).unwrap());
    assert!(store.load_all().0.is_empty());
    assert_eq!(names(store.trash_dir()).len(), 1);

    // After a restart too.
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.undo_delete(&c.id).unwrap(), c);
    assert_eq!(store.load_all().0, vec![c.clone()]);
    assert!(names(store.trash_dir()).is_empty());
    assert!(matches!(
        store.undo_delete(&c.id),
        Err(StoreError::NotInTrash { .. })
    ));
    // A conversation never saved has nothing to delete.
    let unsaved = store.new_conversation();
    assert!(!store.delete(&unsaved.id).unwrap());
}

#[test]
fn trash_older_than_thirty_days_is_purged_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let day = 24 * 3600 * 1000;
    let now = now_ms();
    let old = format!("{:013}-1-old.json", now - (TRASH_DAYS + 1) * day);
    let recent = format!("{:013}-2-recent.json", now - day);
    for name in [&old, &recent, &"notes.txt".to_string()] {
        fs::write(store.trash_dir().join(name), b"{}").unwrap();
    }
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(names(store.trash_dir()), [recent, "notes.txt".to_string()]);
}

#[test]
fn a_kill_during_generation_keeps_the_user_message() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let mut store = Store::open(dir.path()).unwrap();
        let mut c = store.new_conversation();
        c.push_user("First question");
        c.push_assistant("First answer.", Some(answer("stop")));
        store.save(&c).unwrap();
        // The app saves the user's message before generation starts...
        c.push_user("Second question");
        store.save(&c).unwrap();
        // ...then tokens stream in, and the process dies before the answer is saved.
        c.push_assistant("Half an ans", None);
        // A write in progress when the process died leaves a temporary file.
        fs::write(
            store.conversations_dir().join(".hearth-abc123.tmp"),
            b"{\"version\": 1, \"id\": ",
        )
        .unwrap();
        id = c.id.clone();
        drop((store, c));
    }
    let mut store = Store::open(dir.path()).unwrap();
    let (loaded, problems) = store.load_all();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id, id);
    assert_eq!(
        contents(&loaded[0]),
        ["First question", "First answer.", "Second question"]
    );
    // The app can answer it now: the answer goes under the saved question.
    let mut c = loaded[0].clone();
    let a = c.push_assistant("Whole answer.", None);
    assert_eq!(c.node(a).unwrap().parent, c.thread().get(2).map(|n| n.id));
}

// ---- settings ----

#[test]
fn data_dirs_follow_the_override() {
    let dirs = DataDirs::resolve(Some("some/hearth-x".into())).unwrap();
    assert_eq!(dirs.data, Path::new("some/hearth-x"));
    assert_eq!(
        dirs.settings_path(),
        Path::new("some/hearth-x/settings.json")
    );
    // Empty counts as unset (the platform folders, where there is a home).
    if let Some(dirs) = DataDirs::resolve(Some("".into())) {
        assert!(
            dirs.data.ends_with("hearth")
                || dirs.data.ends_with("Hearth")
                || dirs.data.ends_with("data"),
            "{dirs:?}"
        );
        assert_ne!(dirs.settings_path().parent(), None);
    }
    assert_eq!(
        DataDirs::from_env(),
        DataDirs::resolve(std::env::var_os(DATA_DIR_ENV))
    );
}

#[test]
fn settings_default_when_there_is_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, problem) = Settings::load(&dir.path().join("settings.json"));
    assert_eq!(problem, None);
    assert_eq!(settings, Settings::default());
    assert_eq!(settings.route, hearth_engine::route::RouteMode::Local);
    assert_eq!(settings.context, ContextPolicy::DropMiddle);
    assert_eq!(settings.sampling.seed, None);
    assert!((settings.sampling.temperature - 0.8).abs() < 1e-6);
    assert_eq!(settings.text_scale, 1.0);
}

#[test]
fn settings_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("settings.json");
    let settings = Settings {
        system_prompt: "Answer in French.".into(),
        sampling: Sampling {
            temperature: 0.2,
            top_k: 0,
            seed: Some(7),
            max_tokens: 300,
            ..Sampling::default()
        },
        context: ContextPolicy::RollingWindow,
        speculative: true,
        threads: Some(6),
        backend: BackendPreference::Cpu,
        route: hearth_engine::route::RouteMode::Auto,
        cloud_url: Some("https://api.example.com/v1".into()),
        cloud_model: Some("big-model".into()),
        theme: Theme::Dark,
        text_scale: 1.25,
        last_model: Some("/models/qwen.gguf".into()),
        models_dir: Some("/models".into()),
        ..Settings::default()
    };
    settings.save(&path).unwrap();
    assert_eq!(names(path.parent().unwrap()), ["settings.json"]);
    assert_eq!(Settings::load(&path), (settings.clone(), None));
    let config = settings.sampling.sampler_config();
    assert_eq!((config.seed, config.top_k), (7, 0));
    assert_eq!(
        settings.backend.kind(),
        hearth_engine::api::BackendKind::Cpu
    );
    let text = fs::read_to_string(&path).unwrap();
    assert!(!text.to_lowercase().contains("key"), "{text}");
}

#[test]
fn a_partial_settings_file_fills_in_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.json");
    fs::write(
        &path,
        r#"{"theme": "light", "sampling": {"temperature": 0.1}, "text_scale": 9, "future": 1}"#,
    )
    .unwrap();
    let (settings, problem) = Settings::load(&path);
    assert_eq!(problem, None);
    assert_eq!(settings.theme, Theme::Light);
    assert!((settings.sampling.temperature - 0.1).abs() < 1e-6);
    assert_eq!(settings.sampling.max_tokens, Sampling::default().max_tokens);
    assert_eq!(settings.system_prompt, Settings::default().system_prompt);
    assert_eq!(settings.text_scale, 3.0, "clamped");
}

#[test]
fn a_corrupt_settings_file_is_kept_aside_and_defaults_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.json");
    for (round, bytes) in [&b"{\"theme\": \"dark\", \"syst"[..], b"\xff\xfe"]
        .into_iter()
        .enumerate()
    {
        fs::write(&path, bytes).unwrap();
        let (settings, problem) = Settings::load(&path);
        assert_eq!(settings, Settings::default());
        let problem = problem.expect("reported");
        assert_eq!(problem.path, path);
        assert!(
            problem.message.contains("settings.json.corrupt"),
            "{problem}"
        );
        assert!(!path.exists());
        let kept: Vec<String> = names(dir.path());
        assert_eq!(kept.len(), round + 1, "{kept:?}");
        // Nothing lost: the first file is still there, byte for byte.
        assert_eq!(
            fs::read(dir.path().join("settings.json.corrupt")).unwrap(),
            b"{\"theme\": \"dark\", \"syst"
        );
    }
    // Saving afterwards writes a fresh file beside the kept ones.
    Settings::default().save(&path).unwrap();
    assert_eq!(Settings::load(&path), (Settings::default(), None));
}

/// The window and `hearth chat` both take their request from `Settings::generate_params`, so a
/// setting (speculation included: `chat` used to ignore it) means the same in both.
#[test]
fn settings_become_the_request_parameters_in_one_place() {
    use hearth_engine::route::RouteMode;
    use hearth_engine::sched::{ContextPolicy, Speculation};
    let settings = Settings {
        sampling: Sampling {
            temperature: 0.3,
            top_k: 7,
            seed: Some(11),
            max_tokens: 0,
            ..Sampling::default()
        },
        context: ContextPolicy::RollingWindow,
        speculative: true,
        route: RouteMode::Auto,
        ..Settings::default()
    };
    let p = settings.generate_params();
    assert_eq!(p.speculation, Speculation::PROMPT_LOOKUP);
    assert_eq!(p.max_tokens, 1, "at least one token");
    assert_eq!(
        (p.sampler.temperature, p.sampler.top_k, p.sampler.seed),
        (0.3, 7, 11)
    );
    assert_eq!(p.context, ContextPolicy::RollingWindow);
    assert_eq!(p.route, RouteMode::Auto);
    let off = Settings {
        speculative: false,
        ..settings
    };
    assert_eq!(off.generate_params().speculation, Speculation::Off);
}
