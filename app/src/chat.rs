//! `hearth chat`: the desktop app's conversation in a terminal, for machines without a display.
//!
//! Each message read from stdin (one line; a line ending in `\` continues on the next) is a user
//! message. The whole thread goes to the engine as [`Prompt::Chat`], so the engine's prefix cache
//! reuses the earlier turns; the answer streams to stdout token by token and a stats line (route,
//! prompt and reused tokens, speed, time to first token, finish) goes to stderr. Conversations
//! live in the desktop app's [`Store`] (the user message is saved before generation starts, the
//! answer with its [`Answer`] footer when it ends), so they show up in the app too. A line
//! starting with `/` is a command ([`HELP`]).
//!
//! Ctrl-C while an answer streams cancels it (the partial text is kept, finish `cancelled`);
//! Ctrl-C at the prompt quits. A watcher thread (`hearth-ctrl-c`, a small tokio runtime) turns the
//! signal into a message for the streaming loop. When stdin is not a terminal there are no
//! prompts or banners: `printf 'Hi\n' | hearth chat -m MODEL` prints just the answer.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, anyhow};
use crossbeam_channel::{Receiver, select};
use hearth_engine::api::{
    self, EngineHandle, Event, GenerateParams, Prompt, RouteMode, Target, TextKind,
};
use hearth_engine::tokenizer::ChatMessage;

use crate::commands::BadInput;
use crate::conversation::settings::Settings;
use crate::conversation::store::{self, DataDirs, Store};
use crate::conversation::{Answer, Conversation, Reasoning, Reply, Role, now_ms};
use crate::format;
use crate::routed::{Route, RouteArgs};
use crate::run::BackendArgs;

/// What `hearth chat` takes.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// The GGUF model file.
    #[arg(long, short)]
    pub model: PathBuf,
    /// Continue the conversation with this id (`/list` shows them).
    #[arg(long, value_name = "ID")]
    pub conversation: Option<String>,
    /// Tokens of one answer at most (default: the settings' maximum).
    #[arg(short = 'n', long = "n-predict")]
    pub n_predict: Option<usize>,
    /// Sampling temperature (default: the settings'); 0 picks the most likely token every time.
    #[arg(long)]
    pub temp: Option<f32>,
    /// Random seed (default: the settings', else a new one for each answer).
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub route: RouteArgs,
}

/// What `/help` prints.
pub const HELP: &str = "\
Type a message and press Enter; end a line with \\ to continue the message on the next line.
  /new             start a new conversation
  /list            recent conversations, with their ids
  /open ID         continue conversation ID
  /regenerate      a new alternative answer to the last message
  /system          show the system prompt in effect
  /system TEXT     set this conversation's system prompt (`default`: the settings', `none`: none)
  /help            this text
  /quit            quit (so do Ctrl-D and Ctrl-C at the prompt)
Ctrl-C while an answer streams stops it and keeps what it wrote. Start a message with // to
send one that begins with /.";

/// Conversations `/list` shows.
const LIST_LIMIT: usize = 20;

/// Characters of each message shown when a conversation is opened.
const PREVIEW_CHARS: usize = 300;

/// What the loop does after a message or command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Next,
    /// The message or command failed (reported on stderr); the loop goes on.
    Failed,
    Quit,
}

/// `hearth chat`.
pub fn chat(args: ChatArgs) -> Result<()> {
    if args.n_predict == Some(0) {
        return Err(BadInput("-n must be at least 1 (the most tokens of an answer)".into()).into());
    }
    if let Some(t) = args.temp
        && !(t.is_finite() && t >= 0.0)
    {
        return Err(BadInput(format!("--temp {t}: give a number of at least 0")).into());
    }
    let dirs = DataDirs::from_env().ok_or_else(|| {
        BadInput(format!(
            "there is no home folder to keep conversations in: set {}",
            store::DATA_DIR_ENV
        ))
    })?;
    let (settings, problem) = Settings::load(&dirs.settings_path());
    if let Some(problem) = problem {
        eprintln!("hearth: {problem}");
    }
    let mut store = Store::open(&dirs.data)?;
    let conversation = match &args.conversation {
        Some(id) => open_conversation(&mut store, id)?,
        None => store.new_conversation(),
    };
    let interactive = std::io::stdin().is_terminal();
    let busy = Arc::new(AtomicBool::new(false));
    let interrupts = watch_ctrl_c(Arc::clone(&busy), interactive)?;
    let mut config = args.backend.engine_config();
    config.cloud = args.route.cloud_client()?;
    config.probe = args.route.probe()?;
    let (engine, info) = crate::run::load_engine(config, &args.model, None)?;
    if !info.has_chat_template && args.route.route != Route::Cloud {
        return Err(BadInput(format!(
            "{}: the model has no chat template, so it cannot chat (hearth run --prompt gives it plain text)",
            args.model.display()
        ))
        .into());
    }
    let model_name = args.model.file_name().map_or_else(
        || args.model.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut chat = Chat {
        engine,
        model_name,
        cloud_model: args.route.cloud_model.clone(),
        store,
        settings,
        conversation,
        n_predict: args.n_predict,
        temp: args.temp,
        seed: args.seed,
        route: args.route.mode(),
        interactive,
        dim: std::io::stderr().is_terminal(),
        busy,
        interrupts,
    };
    if interactive {
        eprintln!("hearth: {} on the {}", info.name, info.compute);
        if let Some(why) = &info.fallback {
            eprintln!("hearth: not on the GPU: {why}");
        }
        if chat.conversation.is_empty() {
            eprintln!("hearth: a new conversation; /help lists the commands");
        } else {
            chat.show_opened();
        }
    }
    chat.run()
}

/// The stored conversation `id`.
fn open_conversation(store: &mut Store, id: &str) -> Result<Conversation> {
    let path = store.path_of(id).map_err(|e| BadInput(e.to_string()))?;
    if !path.exists() {
        return Err(BadInput(format!(
            "no conversation {id} in {} (/list shows them)",
            store.conversations_dir().display()
        ))
        .into());
    }
    let conversation = store::read_conversation(&path)?;
    if conversation.id != id {
        return Err(BadInput(format!(
            "{} holds conversation {:?}, not {id:?}",
            path.display(),
            conversation.id
        ))
        .into());
    }
    Ok(conversation)
}

/// Starts the thread that watches for Ctrl-C: while a turn is `busy` it sends a message (the
/// streaming loop cancels the answer); otherwise it quits with status 130. The signal handler is
/// installed before this returns, so no Ctrl-C after it kills the process mid-turn.
fn watch_ctrl_c(busy: Arc<AtomicBool>, interactive: bool) -> Result<Receiver<()>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting the Ctrl-C watcher")?;
    #[cfg(unix)]
    let signal = runtime.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
    });
    #[cfg(windows)]
    let signal = runtime.block_on(async { tokio::signal::windows::ctrl_c() });
    let mut signal = signal.context("listening for Ctrl-C")?;
    std::thread::Builder::new()
        .name("hearth-ctrl-c".into())
        .spawn(move || {
            runtime.block_on(async move {
                while signal.recv().await.is_some() {
                    if busy.load(Ordering::SeqCst) {
                        let _ = tx.send(());
                    } else {
                        if interactive {
                            eprintln!();
                        }
                        // Everything finished is saved: a turn saves before it stops being busy.
                        std::process::exit(130);
                    }
                }
            });
        })
        .context("starting the Ctrl-C watcher")?;
    Ok(rx)
}

/// One `hearth chat` session.
struct Chat {
    engine: EngineHandle,
    /// The local model's file name (an answer's `model` when it ran locally).
    model_name: String,
    /// The model at the cloud endpoint (an answer's `model` when it ran there).
    cloud_model: String,
    store: Store,
    settings: Settings,
    conversation: Conversation,
    n_predict: Option<usize>,
    temp: Option<f32>,
    seed: Option<u64>,
    route: RouteMode,
    /// Stdin is a terminal: prompts, banners and notices.
    interactive: bool,
    /// Stderr is a terminal: the stats line is dim.
    dim: bool,
    /// A turn is in progress (Ctrl-C cancels instead of quitting).
    busy: Arc<AtomicBool>,
    /// One message per Ctrl-C during a turn.
    interrupts: Receiver<()>,
}

impl Chat {
    /// Reads messages until end of input or `/quit`. Without a terminal, a message or command
    /// that failed makes the exit status 1 (after the rest of the input).
    fn run(&mut self) -> Result<()> {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut failed = false;
        while let Some(message) = self.read_message(&mut input)? {
            self.busy.store(true, Ordering::SeqCst);
            let step = self.handle(&message);
            self.busy.store(false, Ordering::SeqCst);
            match step? {
                Step::Next => {}
                Step::Failed => failed = true,
                Step::Quit => break,
            }
        }
        if failed && !self.interactive {
            return Err(anyhow!("hearth chat: some messages failed (see above)"));
        }
        Ok(())
    }

    /// The next message: a line, or lines joined where one ends with `\`. `None` at the end of
    /// the input.
    fn read_message(&self, input: &mut impl BufRead) -> Result<Option<String>> {
        let mut message = String::new();
        loop {
            if self.interactive {
                let mut out = std::io::stdout().lock();
                out.write_all(if message.is_empty() { b"> " } else { b". " })?;
                out.flush()?;
            }
            let mut line = String::new();
            if input.read_line(&mut line).context("reading stdin")? == 0 {
                if self.interactive {
                    println!();
                }
                let message = message.trim_end();
                return Ok((!message.is_empty()).then(|| message.to_string()));
            }
            let line = line.strip_suffix('\n').unwrap_or(&line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            match line.strip_suffix('\\') {
                Some(part) => {
                    message.push_str(part);
                    message.push('\n');
                }
                None => {
                    message.push_str(line);
                    return Ok(Some(message));
                }
            }
        }
    }

    /// A message from the user: a command, or text to answer.
    fn handle(&mut self, message: &str) -> Result<Step> {
        let text = message.trim();
        if text.is_empty() {
            return Ok(Step::Next);
        }
        match text.strip_prefix('/') {
            Some(escaped) if escaped.starts_with('/') => self.say(escaped),
            Some(command) => self.command(command),
            None => self.say(text),
        }
    }

    fn command(&mut self, line: &str) -> Result<Step> {
        let (name, rest) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(name, rest)| (name, rest.trim()));
        match name {
            "quit" | "exit" | "q" => return Ok(Step::Quit),
            "help" | "?" => println!("{HELP}"),
            "new" => {
                self.conversation = self.store.new_conversation();
                self.notice("a new conversation");
            }
            "list" => self.list(),
            "open" if rest.is_empty() => return Ok(self.error("give an id: /open ID (/list)")),
            "open" => match open_conversation(&mut self.store, rest) {
                Ok(conversation) => {
                    self.conversation = conversation;
                    if self.interactive {
                        self.show_opened();
                    }
                }
                Err(e) => return Ok(self.error(&format!("{e:#}"))),
            },
            "regenerate" | "regen" => return self.regenerate(),
            "system" => self.system(rest)?,
            _ => {
                return Ok(self.error(&format!(
                    "unknown command /{name} (/help lists them; start a message with // to send a /)"
                )));
            }
        }
        Ok(Step::Next)
    }

    /// Saves `text` as the user's message, then answers the thread.
    fn say(&mut self, text: &str) -> Result<Step> {
        self.conversation.push_user(text);
        self.save()?;
        let messages = self
            .conversation
            .chat_messages(&self.settings.system_prompt);
        let Some(reply) = self.generate(messages)? else {
            return Ok(Step::Failed);
        };
        self.conversation.push_reply(reply);
        self.save()?;
        Ok(Step::Next)
    }

    /// A new alternative to the last answer (or an answer to a last message that has none).
    fn regenerate(&mut self) -> Result<Step> {
        let last = self.conversation.thread().last().map(|n| (n.id, n.role));
        let system = self.settings.system_prompt.clone();
        match last {
            Some((id, Role::Assistant)) => {
                let messages = self.conversation.prompt_for(id, &system)?;
                let Some(reply) = self.generate(messages)? else {
                    return Ok(Step::Failed);
                };
                let new = self.conversation.regenerate_reply(id, reply)?;
                self.save()?;
                let (index, count) = self.conversation.alternatives(new)?;
                self.notice(&format!("answer {} of {count}", index + 1));
                Ok(Step::Next)
            }
            Some((_, Role::User)) => {
                let messages = self.conversation.chat_messages(&system);
                let Some(reply) = self.generate(messages)? else {
                    return Ok(Step::Failed);
                };
                self.conversation.push_reply(reply);
                self.save()?;
                Ok(Step::Next)
            }
            _ => Ok(self.error("there is no answer to regenerate yet")),
        }
    }

    /// `/system [TEXT | default | none]`.
    fn system(&mut self, text: &str) -> Result<()> {
        let prompt = match text {
            "" => {
                let current = self
                    .conversation
                    .effective_system_prompt(&self.settings.system_prompt);
                println!("{}", current.unwrap_or("(no system prompt)"));
                return Ok(());
            }
            "default" => None,
            "none" => Some(String::new()),
            text => Some(text.to_string()),
        };
        self.conversation.set_system_prompt(prompt);
        // An empty conversation is saved with its first message.
        if !self.conversation.is_empty() {
            self.save()?;
        }
        self.notice("system prompt set");
        Ok(())
    }

    /// Prints the newest conversations: `*` marks the open one.
    fn list(&mut self) {
        let (conversations, problems) = self.store.load_all();
        for problem in &problems {
            eprintln!("hearth: skipped {problem}");
        }
        if conversations.is_empty() {
            println!("(no conversations yet)");
        }
        for c in conversations.iter().take(LIST_LIMIT) {
            let mark = if c.id == self.conversation.id {
                '*'
            } else {
                ' '
            };
            println!(
                "{mark} {}  {:>3} messages  {:>12}  {}",
                c.id,
                c.thread().len(),
                ago(c.updated),
                c.display_title()
            );
        }
        if conversations.len() > LIST_LIMIT {
            println!("  ... and {} older", conversations.len() - LIST_LIMIT);
        }
    }

    /// Says which conversation is open and shows its last messages.
    fn show_opened(&self) {
        let c = &self.conversation;
        let thread = c.thread();
        eprintln!(
            "hearth: conversation {} \"{}\", {} messages",
            c.id,
            c.display_title(),
            thread.len()
        );
        let shown = thread.len().saturating_sub(4);
        if shown > 0 {
            println!("...");
        }
        for node in &thread[shown..] {
            let mut text: String = node.content.chars().take(PREVIEW_CHARS).collect();
            if node.content.chars().count() > PREVIEW_CHARS {
                text.push('…');
            }
            println!("{}: {text}", node.role.as_str());
        }
    }

    /// The generation settings: the saved ones, with the command line's overrides.
    /// The settings' parameters ([`Settings::generate_params`], as in the window) with this
    /// session's command-line overrides.
    fn params(&self) -> GenerateParams {
        let mut settings = self.settings.clone();
        if let Some(t) = self.temp {
            settings.sampling.temperature = t;
        }
        if let Some(seed) = self.seed {
            settings.sampling.seed = Some(seed);
        }
        if let Some(n) = self.n_predict {
            settings.sampling.max_tokens = n;
        }
        settings.route = self.route;
        settings.generate_params()
    }

    /// Streams an answer to `messages` to stdout and prints its stats line; returns it with its
    /// reasoning, tool calls and footer (also when Ctrl-C cancelled it), or `None` after reporting
    /// an engine error.
    fn generate(&self, messages: Vec<ChatMessage>) -> Result<Option<Reply>> {
        // A Ctrl-C from before this answer is not meant for it.
        while self.interrupts.try_recv().is_ok() {}
        let (id, rx) = self.engine.generate(Prompt::Chat(messages), self.params());
        let mut out = std::io::stdout().lock();
        let mut printed = false;
        // Reasoning is printed as it streams, dimmed on a terminal, and set apart from the
        // answer by a blank line.
        let mut thinking = false;
        let started = std::time::Instant::now();
        let mut thought = None;
        loop {
            select! {
                recv(rx) -> event => match event {
                    Ok(Event::Token { text, kind, .. }) => {
                        printed |= !text.is_empty();
                        let mut piece = String::new();
                        match (kind, thinking) {
                            (TextKind::Reasoning, false) => {
                                thinking = true;
                                piece.push_str(if self.dim { "\x1b[2m" } else { "[thinking] " });
                            }
                            (TextKind::Answer, true) => {
                                thinking = false;
                                thought = Some(started.elapsed());
                                piece.push_str(if self.dim { "\x1b[0m\n\n" } else { "\n\n" });
                            }
                            _ => {}
                        }
                        piece.push_str(&text);
                        let written = out.write_all(piece.as_bytes()).and_then(|()| out.flush());
                        if let Err(e) = written {
                            // Stdout closed (a pipe's reader went away): stop generating.
                            self.engine.cancel(id);
                            return Err(e).context("writing to stdout");
                        }
                    }
                    Ok(Event::Done { finish, stats, text, reasoning, tool_calls, route, .. }) => {
                        if thinking && self.dim {
                            write!(out, "\x1b[0m")?;
                        }
                        writeln!(out)?;
                        out.flush()?;
                        drop(out);
                        let line = format::answer_stats(&route, &stats, finish.as_str());
                        if self.dim {
                            eprintln!("\x1b[2m{line}\x1b[0m");
                        } else {
                            eprintln!("{line}");
                        }
                        let model = match route.target {
                            Target::Local => &self.model_name,
                            Target::Cloud => &self.cloud_model,
                        };
                        let answer = Answer::from_stats(model, &route, &stats, finish.as_str());
                        let seconds = thought.unwrap_or_else(|| started.elapsed()).as_secs_f64();
                        return Ok(Some(Reply {
                            content: text,
                            reasoning: (!reasoning.trim().is_empty())
                                .then_some(Reasoning { text: reasoning, seconds }),
                            tool_calls,
                            answer: Some(answer),
                        }));
                    }
                    Ok(Event::Error { message, .. }) => {
                        if printed {
                            writeln!(out)?;
                        }
                        drop(out);
                        eprintln!("error: {message}");
                        return Ok(None);
                    }
                    Ok(_) => {}
                    Err(_) => return Err(anyhow!("the engine stopped while answering")),
                },
                recv(self.interrupts) -> _ => self.engine.cancel(id),
                default(api::DEFAULT_WAIT) => {
                    self.engine.cancel(id);
                    return Err(anyhow!(
                        "no answer from the engine in {} s",
                        api::DEFAULT_WAIT.as_secs()
                    ));
                }
            }
        }
    }

    fn save(&mut self) -> Result<()> {
        self.store
            .save(&self.conversation)
            .context("saving the conversation")
    }

    /// A note for the person at the terminal (nothing when stdin is a pipe).
    fn notice(&self, text: &str) {
        if self.interactive {
            eprintln!("hearth: {text}");
        }
    }

    /// Reports a failed command on stderr.
    fn error(&self, text: &str) -> Step {
        eprintln!("error: {text}");
        Step::Failed
    }
}

/// How long ago a Unix-ms time was, e.g. `5 min ago`.
fn ago(then_ms: u64) -> String {
    let s = now_ms().saturating_sub(then_ms) / 1000;
    match s {
        0..60 => "just now".to_string(),
        60..3600 => format!("{} min ago", s / 60),
        3600..86_400 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_read_in_the_largest_whole_unit() {
        let now = super::now_ms();
        assert_eq!(super::ago(now), "just now");
        assert_eq!(super::ago(now - 5 * 60_000 - 10), "5 min ago");
        assert_eq!(super::ago(now - 3 * 3_600_000), "3 h ago");
        assert_eq!(super::ago(now - 2 * 86_400_000), "2 days ago");
    }
}
