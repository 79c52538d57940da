//! The window driven through egui_kittest (AccessKit labels, as a user or a screen reader finds
//! the controls) with the real engine and SmolLM2 on the CPU.

use std::time::{Duration, Instant};

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use hearth_engine::api::{BackendKind, EngineConfig, Fault, FaultStage};
use hearth_engine::source::{self, SMOLLM2_135M_Q4_1};

use super::{HearthApp, Options};
use crate::conversation::settings::Settings;
use crate::conversation::store::DataDirs;

fn dirs(root: &std::path::Path) -> DataDirs {
    DataDirs {
        data: root.join("data"),
        config: root.join("config"),
    }
}

pub(super) fn harness(root: &std::path::Path, with_model: bool) -> Harness<'static, HearthApp> {
    // Short greedy answers keep the test quick.
    harness_with(root, with_model, 12)
}

fn harness_with(
    root: &std::path::Path,
    with_model: bool,
    max_tokens: usize,
) -> Harness<'static, HearthApp> {
    harness_configured(root, with_model, |s| s.sampling.max_tokens = max_tokens)
}

/// A harness whose saved settings `configure` adjusts first (greedy answers).
fn harness_configured(
    root: &std::path::Path,
    with_model: bool,
    configure: impl FnOnce(&mut Settings),
) -> Harness<'static, HearthApp> {
    harness_engine(root, with_model, configure, None)
}

/// [`harness_configured`] with a panic injected once into the engine thread at `fault`.
fn harness_engine(
    root: &std::path::Path,
    with_model: bool,
    configure: impl FnOnce(&mut Settings),
    fault: Option<Fault>,
) -> Harness<'static, HearthApp> {
    let dirs = dirs(root);
    std::fs::create_dir_all(&dirs.config).unwrap();
    let mut settings = Settings::default();
    settings.sampling.temperature = 0.0;
    configure(&mut settings);
    settings.save(&dirs.settings_path()).unwrap();
    let model = with_model.then(|| source::fetch(&SMOLLM2_135M_Q4_1).unwrap());
    Harness::builder()
        .with_size([900.0, 640.0])
        .build_eframe(move |cc| {
            HearthApp::new(
                &cc.egui_ctx,
                Options {
                    model,
                    dirs: Some(dirs),
                    engine: Some(EngineConfig {
                        backend: BackendKind::Cpu,
                        threads: Some(1),
                        fault,
                        ..EngineConfig::default()
                    }),
                },
            )
            .unwrap()
        })
}

/// Whether some control or text shows `text`.
pub(super) fn shows(h: &Harness<'static, HearthApp>, text: &str) -> bool {
    h.query_all_by_label_contains(text).next().is_some()
}

/// Types into the composer as a user would: focus it, then type.
pub(super) fn type_message(h: &mut Harness<'static, HearthApp>, text: &str) {
    h.get_by_role_and_label(Role::MultilineTextInput, "Message")
        .focus();
    h.run_steps(2);
    h.get_by_role_and_label(Role::MultilineTextInput, "Message")
        .type_text(text);
    h.run_steps(2);
}

/// Steps the harness until `done` holds (the engine answers on its own threads).
pub(super) fn wait_for(
    h: &mut Harness<'static, HearthApp>,
    what: &str,
    done: impl Fn(&HearthApp) -> bool,
) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
        h.step();
    }
    h.run_steps(2);
}

#[test]
fn a_question_gets_a_streamed_local_answer_that_is_saved_and_found_again_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut h = harness(root.path(), true);
    wait_for(&mut h, "the model", HearthApp::ready);
    wait_for(&mut h, "the store", |a| a.loaded_store);
    type_message(&mut h, "What is the capital of France?");
    h.get_by_label("Send").click();
    h.run_steps(2);
    assert!(h.state().streaming.is_some(), "sending starts an answer");
    assert!(shows(&h, "Stop"), "Stop shows while the answer streams");
    wait_for(&mut h, "the answer", |a| a.streaming.is_none());
    let c = h.state().current().expect("a conversation").clone();
    let thread = c.thread();
    assert_eq!(thread.len(), 2, "{thread:?}");
    assert_eq!(thread[0].content, "What is the capital of France?");
    let answer = thread[1]
        .answer
        .as_ref()
        .expect("the answer's footer facts");
    assert!(!thread[1].content.is_empty());
    assert_eq!(answer.route.target, hearth_engine::route::Target::Local);
    assert!(answer.tokens > 0 && answer.tokens <= 12, "{answer:?}");
    // The footer shows the route badge and the stats.
    assert!(shows(&h, "Local"));
    assert!(shows(&h, "first token"));
    // Regenerate keeps both answers, switchable.
    h.get_by_label("Regenerate").click();
    h.run_steps(2);
    wait_for(&mut h, "the second answer", |a| a.streaming.is_none());
    let c = h.state().current().unwrap();
    let last = c.thread().last().unwrap().id;
    assert_eq!(c.alternatives(last).unwrap(), (1, 2));
    assert!(shows(&h, "2/2"));
    // Editing the question branches the conversation: the old question and its answers stay.
    h.get_by_label("Edit").click();
    h.run_steps(2);
    let editor = || Role::MultilineTextInput;
    h.get_by_role_and_label(editor(), "Edit message").focus();
    h.run_steps(2);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.get_by_role_and_label(editor(), "Edit message")
        .type_text("What is the capital of Spain?");
    h.run_steps(2);
    h.get_by_label("Send edit").click();
    h.run_steps(2);
    wait_for(&mut h, "the edited question's answer", |a| {
        a.streaming.is_none()
    });
    let c = h.state().current().unwrap();
    let thread = c.thread();
    assert_eq!(thread.len(), 2, "{thread:?}");
    assert_eq!(thread[0].content, "What is the capital of Spain?");
    assert_eq!(c.alternatives(thread[0].id).unwrap(), (1, 2));
    assert!(thread[1].answer.is_some());
    h.get_by_label("Previous alternative").click();
    h.run_steps(2);
    let c = h.state().current().unwrap();
    assert_eq!(c.thread()[0].content, "What is the capital of France?");
    assert_eq!(c.thread().len(), 2, "the old branch keeps its answers");
    drop(h);
    // A new window on the same folders finds the conversation, with both answers.
    let mut h = harness(root.path(), false);
    wait_for(&mut h, "the store", |a| a.loaded_store);
    let c = h.state().current().expect("the saved conversation");
    assert_eq!(c.thread()[0].content, "What is the capital of France?");
    let last = c.thread().last().unwrap().id;
    assert_eq!(c.alternatives(last).unwrap(), (1, 2));
    assert!(shows(&h, "What is the capital of France?"));
}

/// The engine thread panicking in the middle of an answer (the supervisor catches it) shows a
/// notice in the window; the question stays in the conversation, unanswered, and "Answer" gets
/// it answered by the same engine.
#[test]
fn an_engine_panic_mid_answer_shows_a_notice_and_keeps_the_conversation() {
    let root = tempfile::tempdir().unwrap();
    let mut h = harness_engine(
        root.path(),
        true,
        |s| s.sampling.max_tokens = 12,
        Some(Fault::once(FaultStage::Step)),
    );
    wait_for(&mut h, "the model", HearthApp::ready);
    wait_for(&mut h, "the store", |a| a.loaded_store);
    type_message(&mut h, "What is the capital of France?");
    h.get_by_label("Send").click();
    h.run_steps(2);
    wait_for(&mut h, "the failed answer", |a| a.streaming.is_none());
    let notice = "the answer failed: internal error in the engine: injected fault at Step";
    assert!(
        h.state().notices.iter().any(|n| n == notice),
        "{:?}",
        h.state().notices
    );
    assert!(shows(&h, notice), "the notice is on screen");
    let thread = h.state().current().expect("a conversation").thread();
    assert_eq!(thread.len(), 1, "{thread:?}");
    assert_eq!(thread[0].content, "What is the capital of France?");
    h.get_by_label("Answer").click();
    h.run_steps(2);
    wait_for(&mut h, "the answer", |a| a.streaming.is_none());
    let thread = h.state().current().expect("a conversation").thread();
    assert_eq!(thread.len(), 2, "{thread:?}");
    assert!(!thread[1].content.is_empty(), "{thread:?}");
}

#[test]
fn stop_ends_a_streaming_answer_and_keeps_what_it_wrote() {
    let root = tempfile::tempdir().unwrap();
    let mut h = harness_with(root.path(), true, 2000);
    wait_for(&mut h, "the model", HearthApp::ready);
    wait_for(&mut h, "the store", |a| a.loaded_store);
    type_message(
        &mut h,
        "Write a very long story about a dragon and a lighthouse.",
    );
    h.get_by_label("Send").click();
    h.run_steps(2);
    wait_for(&mut h, "the first words", |a| {
        a.streaming.as_ref().is_some_and(|s| s.text.len() > 20)
    });
    h.get_by_label("Stop").click();
    h.run_steps(2);
    wait_for(&mut h, "the stop", |a| a.streaming.is_none());
    let c = h.state().current().unwrap();
    let thread = c.thread();
    assert_eq!(thread.len(), 2);
    let answer = thread[1].answer.as_ref().unwrap();
    assert_eq!(answer.finish, "cancelled");
    assert!(answer.tokens > 0 && answer.tokens < 2000, "{answer:?}");
    assert!(thread[1].content.len() > 20, "the partial answer is kept");
    // It is on disk too.
    let file = root
        .path()
        .join("data/conversations")
        .join(format!("{}.json", c.id));
    // The store thread writes it: wait for it.
    let start = Instant::now();
    let saved = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains("\"cancelled\"") || start.elapsed() > Duration::from_secs(20) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(saved.contains("\"cancelled\""), "{saved}");
    // Rename it from the sidebar's context menu.
    let title = c.display_title().to_string();
    h.get_by_role_and_label(Role::Button, &title)
        .click_secondary();
    h.run_steps(2);
    h.get_by_label("Rename").click();
    h.run_steps(2);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.get_by_role_and_label(Role::TextInput, "Title")
        .type_text("Dragons");
    h.key_press(egui::Key::Enter);
    h.run_steps(3);
    assert_eq!(h.state().current().unwrap().display_title(), "Dragons");
    assert!(h.query_by_role_and_label(Role::Button, "Dragons").is_some());
}

#[test]
fn the_welcome_screen_offers_the_largest_model_that_fits_the_free_memory() {
    let root = tempfile::tempdir().unwrap();
    let mut h = harness(root.path(), false);
    wait_for(&mut h, "the store", |a| a.loaded_store);
    h.state_mut().memory_probe = || Some(12_000_000_000);
    h.run_steps(2);
    assert!(shows(&h, "Get Qwen3.5 9B"));
    h.state_mut().memory_probe = || Some(1_000_000_000);
    h.run_steps(2);
    assert!(shows(&h, "Get SmolLM2 135M Instruct"));
}

#[test]
fn the_welcome_screen_gets_the_default_model_with_one_click_and_loads_it() {
    let root = tempfile::tempdir().unwrap();
    // The default model is already in the models folder (as after an earlier download), so the
    // one click finds it without the network.
    let models = root.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let smol = source::fetch(&SMOLLM2_135M_Q4_1).unwrap();
    std::fs::copy(&smol, models.join(smol.file_name().unwrap())).unwrap();
    let folder = models.clone();
    let mut h = harness_configured(root.path(), false, move |s| s.models_dir = Some(folder));
    wait_for(&mut h, "the store", |a| a.loaded_store);
    // With the memory unknown, the offer is the default model.
    h.state_mut().memory_probe = || None;
    h.run_steps(2);
    assert!(shows(&h, "Welcome to Hearth"));
    assert!(shows(&h, "Open a .gguf file you already have"));
    h.get_by_label_contains("Get SmolLM2 135M Instruct").click();
    h.run_steps(2);
    wait_for(&mut h, "the default model", HearthApp::ready);
    assert!(
        !shows(&h, "Welcome to Hearth"),
        "the welcome gives way to the chat"
    );
    let loaded = h.state().settings.last_model.clone().unwrap();
    assert!(loaded.starts_with(&models), "{}", loaded.display());
}

#[test]
fn without_a_model_the_composer_explains_why_it_cannot_send() {
    let root = tempfile::tempdir().unwrap();
    let mut h = harness(root.path(), false);
    wait_for(&mut h, "the store", |a| a.loaded_store);
    h.run_steps(2);
    assert!(shows(&h, "no model yet: open a .gguf file"));
    type_message(&mut h, "hello");
    h.get_by_label("Send").click();
    h.run_steps(2);
    assert!(h.state().streaming.is_none());
    assert!(h.state().conversations.iter().all(|c| c.is_empty()));
}

mod reasoning;
mod settings_window;

/// Pictures of the main screens, light and dark, rendered with wgpu (lavapipe in CI) and compared
/// with `tests/snapshots/` (`UPDATE_SNAPSHOTS=1` rewrites them after a deliberate change).
mod snapshots {
    use super::*;
    use crate::conversation::{Answer, Conversation};
    use hearth_engine::route::Route;
    use hearth_engine::sched::SeqStats;

    /// A window with a fixed conversation and no model (nothing in it depends on timing).
    fn window(root: &std::path::Path, theme: egui::Theme) -> Harness<'static, HearthApp> {
        let dirs = dirs(root);
        std::fs::create_dir_all(&dirs.config).unwrap();
        Settings::default().save(&dirs.settings_path()).unwrap();
        let mut h = Harness::builder()
            .with_size([900.0, 560.0])
            .with_theme(theme)
            .wgpu()
            .build_eframe(move |cc| {
                HearthApp::new(
                    &cc.egui_ctx,
                    Options {
                        model: None,
                        dirs: Some(dirs),
                        engine: Some(EngineConfig {
                            backend: BackendKind::Cpu,
                            ..EngineConfig::default()
                        }),
                    },
                )
                .unwrap()
            });
        wait_for(&mut h, "the store", |a| a.loaded_store);
        // The same pictures on every machine: the welcome's offer follows the free memory.
        h.state_mut().memory_probe = || None;
        h
    }

    fn chat(h: &mut Harness<'static, HearthApp>) {
        let mut c = Conversation::new("1754550000123-snapsh");
        c.push_user("What is the capital of France?");
        let stats = SeqStats {
            prompt_tokens: 35,
            generated_tokens: 9,
            time_to_first_token: Duration::from_millis(84),
            decode_time: Duration::from_millis(50),
            ..SeqStats::default()
        };
        let answer = Answer::from_stats("SmolLM2", &Route::local("local only"), &stats, "stop");
        c.push_assistant(
            "The capital of France is **Paris**.\n\n```text\nParis, France\n```",
            Some(answer),
        );
        let state = h.state_mut();
        state.current = Some(c.id.clone());
        state.conversations.insert(0, c);
        h.run_steps(3);
    }

    fn screens(theme: egui::Theme, name: &str) {
        let root = tempfile::tempdir().unwrap();
        let mut h = window(root.path(), theme);
        h.run_steps(3);
        h.snapshot(format!("welcome-{name}"));
        chat(&mut h);
        h.snapshot(format!("chat-{name}"));
    }

    #[test]
    fn main_screens_look_as_recorded_in_light() {
        screens(egui::Theme::Light, "light");
    }

    #[test]
    fn main_screens_look_as_recorded_in_dark() {
        screens(egui::Theme::Dark, "dark");
    }
}

mod models_window {
    use egui::{Key, Modifiers};

    use super::super::models::Scan;
    use super::*;
    use crate::library::catalog::CATALOG;

    /// The app with a models folder of its own (holding the real SmolLM2 file, linked) and no
    /// other place searched.
    fn with_models_folder(root: &std::path::Path) -> Harness<'static, HearthApp> {
        let models = root.join("models");
        std::fs::create_dir_all(&models).unwrap();
        let file = source::fetch(&SMOLLM2_135M_Q4_1).unwrap();
        let link = models.join(SMOLLM2_135M_Q4_1.file_name);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&file, &link).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&file, &link).unwrap();
        let mut h = harness(root, false);
        h.state_mut().models_window.hearth_dir = Some(models);
        wait_for(&mut h, "the store", |a| a.loaded_store);
        h
    }

    /// A file dropped on the window, as the windowing integration hands it over.
    #[derive(Debug)]
    struct Dropped(std::path::PathBuf);

    impl egui::DroppedFile for Dropped {
        fn path(&self) -> &std::path::Path {
            &self.0
        }

        fn bytes(&self) -> Result<Vec<u8>, String> {
            std::fs::read(&self.0).map_err(|e| e.to_string())
        }
    }

    fn drop_file(h: &mut Harness<'static, HearthApp>, path: std::path::PathBuf) {
        h.input_mut()
            .dropped_files
            .push(std::sync::Arc::new(Dropped(path)));
    }

    fn scanned(a: &HearthApp) -> bool {
        matches!(a.models_window.scan, Scan::Done { .. })
    }

    #[test]
    fn models_opens_from_the_top_bar_button_and_from_ctrl_m() {
        let root = tempfile::tempdir().unwrap();
        let mut h = with_models_folder(root.path());
        assert!(!h.state().models_window.open);
        h.get_by_role_and_label(Role::Button, "Models").click();
        h.run_steps(2);
        assert!(h.state().models_window.open);
        wait_for(&mut h, "the scan", scanned);
        assert!(shows(&h, "On this computer"));
        h.state_mut().models_window.open = false;
        h.run_steps(2);
        assert!(!shows(&h, "On this computer"));
        h.key_press_modifiers(Modifiers::COMMAND, Key::M);
        h.run_steps(2);
        assert!(h.state().models_window.open);
        assert!(shows(&h, "Recommended"));
    }

    #[test]
    fn the_models_folder_lists_smollm2_with_its_facts_and_its_load_button_loads_it() {
        let root = tempfile::tempdir().unwrap();
        let mut h = with_models_folder(root.path());
        h.key_press_modifiers(Modifiers::COMMAND, Key::M);
        h.run_steps(2);
        wait_for(&mut h, "the scan", scanned);
        let Scan::Done { found, estimates } = &h.state().models_window.scan else {
            unreachable!()
        };
        assert_eq!(found.models.len(), 1, "{:?}", found.skipped);
        let facts = found.models[0].facts.as_ref().unwrap();
        assert_eq!(facts.architecture, "llama");
        let quant = facts.quant.clone();
        let verdict = estimates[0].unwrap().verdict;
        assert!(shows(&h, "llama"));
        assert!(shows(&h, &quant), "{quant}");
        assert!(shows(&h, "Hearth"));
        if crate::library::estimate::available_memory().is_some() {
            assert_eq!(verdict, crate::library::estimate::Verdict::Fits);
            assert!(shows(&h, "fits"));
        }
        // The catalog's SmolLM2 entry is that same file: it can be loaded from there too.
        assert!(shows(&h, "Load SmolLM2 135M Instruct"));
        let name = SMOLLM2_135M_Q4_1.file_name.trim_end_matches(".gguf");
        h.get_by_role_and_label(Role::Button, &format!("Load {name}"))
            .click();
        h.run_steps(2);
        wait_for(&mut h, "the model", HearthApp::ready);
    }

    #[test]
    fn the_recommended_list_shows_every_catalog_model_with_a_download_button() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), false);
        h.state_mut().models_window.hearth_dir = Some(root.path().join("empty-models"));
        h.get_by_role_and_label(Role::Button, "Models").click();
        h.run_steps(2);
        wait_for(&mut h, "the scan", scanned);
        assert_eq!(CATALOG.len(), 10);
        for entry in CATALOG {
            assert!(shows(&h, entry.display_name), "{}", entry.display_name);
            let download = format!("Download {}", entry.display_name);
            assert!(shows(&h, &download), "{download}");
        }
        assert!(shows(&h, "No models found"));
    }

    #[test]
    fn a_dropped_file_that_is_not_gguf_shows_a_notice_and_is_not_loaded() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), false);
        wait_for(&mut h, "the store", |a| a.loaded_store);
        let path = root.path().join("notes.txt");
        std::fs::write(&path, "not a model").unwrap();
        drop_file(&mut h, path);
        h.run_steps(2);
        assert!(
            h.state().notices.iter().any(|n| n.contains("notes.txt")),
            "{:?}",
            h.state().notices
        );
        assert!(shows(&h, "is not a .gguf model file"));
        assert!(matches!(
            h.state().model,
            super::super::app::ModelState::None
        ));
    }

    #[test]
    fn a_dropped_gguf_file_loads() {
        let root = tempfile::tempdir().unwrap();
        let mut h = harness(root.path(), false);
        let path = source::fetch(&SMOLLM2_135M_Q4_1).unwrap();
        drop_file(&mut h, path);
        h.run_steps(2);
        wait_for(&mut h, "the model", HearthApp::ready);
    }

    #[test]
    fn a_catalog_download_shows_progress_cancels_resumes_and_offers_load() {
        use super::super::models::Fetch;
        use crate::library::test_server::{Served, TestServer};
        let root = tempfile::tempdir().unwrap();
        let models = root.path().join("models");
        let mut h = harness(root.path(), false);
        let server = TestServer::start();
        h.state_mut().models_window.hearth_dir = Some(models.clone());
        h.state_mut().models_window.download_base = Some(server.base.clone());
        let entry = &CATALOG[0];
        let path = format!("/{}/resolve/main/{}", entry.repo, entry.file);
        let data: Vec<u8> = (0..2u32 << 20).map(|i| (i % 251) as u8).collect();
        let slow = Served {
            chunk_delay: Duration::from_millis(20),
            ..Served::file(data.clone())
        };
        server.serve(&path, slow);
        h.key_press_modifiers(Modifiers::COMMAND, Key::M);
        h.run_steps(2);
        wait_for(&mut h, "the scan", scanned);
        let download = format!("Download {}", entry.display_name);
        h.get_by_role_and_label(Role::Button, &download).click();
        h.run_steps(2);
        wait_for(
            &mut h,
            "some progress",
            |a| matches!(&a.models_window.fetches[0], Fetch::Running { progress: Some(p), .. } if p.done > 0),
        );
        assert!(shows(&h, "downloading"));
        h.get_by_role_and_label(Role::Button, &format!("Cancel {}", entry.display_name))
            .click();
        h.run_steps(2);
        wait_for(&mut h, "the cancel", |a| {
            matches!(&a.models_window.fetches[0], Fetch::Failed(_))
        });
        assert!(shows(&h, "cancelled"));
        let part = crate::library::download::part_path(&entry.dest(&models));
        assert!(part.is_file());
        // A second Download resumes from the kept part.
        server.serve(&path, Served::file(data.clone()));
        h.get_by_role_and_label(Role::Button, &download).click();
        h.run_steps(2);
        wait_for(&mut h, "the download", |a| {
            matches!(&a.models_window.fetches[0], Fetch::There(_))
        });
        assert_eq!(std::fs::read(entry.dest(&models)).unwrap(), data);
        let seen = server.seen();
        assert!(
            seen.iter().any(|s| s.range.is_some()),
            "the second request resumes: {seen:?}"
        );
        assert!(shows(&h, &format!("Load {}", entry.display_name)));
    }
}

#[test]
fn the_window_icon_is_the_256_pixel_artwork() {
    let icon = super::window_icon();
    assert_eq!((icon.width, icon.height), (256, 256));
    assert_eq!(icon.rgba.len(), 256 * 256 * 4);
    // Not blank: the artwork has both transparent corners and opaque pixels.
    assert_eq!(icon.rgba[3], 0, "the top-left corner is transparent");
    assert!(icon.rgba.chunks(4).filter(|p| p[3] == 255).count() > 256 * 256 / 2);
}
