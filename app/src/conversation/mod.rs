//! Conversations: the data model the desktop app shows and edits, saved by [`store`].
//!
//! A [`Conversation`] holds its messages as a tree of [`Node`]s: a node's parent is the message
//! it answers or follows (`None` for a first message). Siblings are alternatives: regenerated
//! answers (assistant siblings) and edited questions (user siblings, each starting a branch; the
//! old branch stays). Every parent remembers its active child (`active_root` does so for the
//! first messages), and the visible [`Conversation::thread`] follows those pointers from the
//! root. [`Conversation::chat_messages`] turns the thread into what the engine is sent.
//!
//! A message is what a chat template reads: besides its text, an assistant message may carry the
//! model's [`Reasoning`] (sent back as `reasoning_content`, the template decides whether it is
//! used) and the tool calls it made; a [`Role::Tool`] message is a call's result and names the
//! call (`tool_call_id`). All are optional in the file, so older files load unchanged.
//!
//! Invariants (checked when a file is read, kept by every operation): node ids are unique, and a
//! node's parent comes before it in `nodes` (so the parent links form a tree, never a cycle).
//!
//! [`settings`] owns the persisted settings; [`store`] owns the files and the data directory.

pub mod settings;
pub mod store;
#[cfg(test)]
mod tests;

use std::time::{SystemTime, UNIX_EPOCH};

use hearth_engine::api::ToolCall;
use hearth_engine::route::{Route, Target};
use hearth_engine::sched::SeqStats;
use hearth_engine::tokenizer::ChatMessage;
use serde::{Deserialize, Serialize};

/// The file format version this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The most characters of a default title (taken from the first user message).
pub const TITLE_CHARS: usize = 48;

/// A message's id, unique within its conversation and never reused there.
pub type NodeId = u64;

/// The largest message id a file may hold (exact in any JSON reader).
const MAX_NODE_ID: NodeId = (1 << 53) - 1;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result, answering an assistant message's call ([`Node::tool_call_id`]).
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// Where an answer ran and why (the footer's route badge).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteInfo {
    pub target: Target,
    /// In words, e.g. "cloud: local model unsure (risk 0.82 >= 0.61)".
    pub reason: String,
}

impl From<&Route> for RouteInfo {
    fn from(route: &Route) -> Self {
        RouteInfo {
            target: route.target,
            reason: route.reason.clone(),
        }
    }
}

/// How an assistant message was made (the footer under an answer).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Answer {
    /// The model's name (file name for a local model, model id for the cloud).
    pub model: String,
    pub route: RouteInfo,
    /// Time to first token.
    pub ttft_ms: u64,
    pub tokens_per_s: f64,
    /// Generated tokens (reasoning included).
    pub tokens: usize,
    /// Of those, the tokens of the model's reasoning.
    #[serde(skip_serializing_if = "is_zero")]
    pub reasoning_tokens: usize,
    /// Prompt tokens found in the prefix cache.
    pub reused_tokens: usize,
    /// Why it ended: `stop`, `length`, `context_full`, `cancelled`, `error`, ...
    pub finish: String,
}

impl Answer {
    /// The footer of an answer the engine finished (`Event::Done`'s fields).
    pub fn from_stats(model: &str, route: &Route, stats: &SeqStats, finish: &str) -> Answer {
        Answer {
            model: model.to_string(),
            route: route.into(),
            ttft_ms: u64::try_from(stats.time_to_first_token.as_millis()).unwrap_or(u64::MAX),
            tokens_per_s: stats.tokens_per_s(),
            tokens: stats.generated_tokens,
            reasoning_tokens: stats.reasoning_tokens,
            reused_tokens: stats.reused_tokens,
            finish: finish.to_string(),
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The model's thinking before an answer, folded under it in the window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Reasoning {
    pub text: String,
    /// How long the model thought: from its first reasoning token to its first answer token
    /// (or the end). 0 where unknown.
    pub seconds: f64,
}

/// A new assistant message: its answer text and what else the model sent with it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reply {
    pub content: String,
    pub reasoning: Option<Reasoning>,
    pub tool_calls: Vec<ToolCall>,
    /// How the answer was made (`None`: it did not finish, e.g. the engine failed).
    pub answer: Option<Answer>,
}

impl Reply {
    /// An answer without reasoning or tool calls.
    pub fn text(content: impl Into<String>, answer: Option<Answer>) -> Reply {
        Reply {
            content: content.into(),
            answer,
            ..Reply::default()
        }
    }
}

/// One message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    /// The message this one follows; `None` for a first message.
    pub parent: Option<NodeId>,
    pub role: Role,
    pub content: String,
    /// Unix ms.
    pub created: u64,
    /// The child the thread continues with (`None` without children).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_child: Option<NodeId>,
    /// For assistant messages: how the answer was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    /// For assistant messages: the model's reasoning before this answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Reasoning>,
    /// For assistant messages: the tools the model called.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For tool messages: the call ([`ToolCall::id`]) this result answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Node {
    /// This message as the engine's chat message.
    pub fn to_chat(&self) -> ChatMessage {
        ChatMessage {
            role: self.role.as_str().to_string(),
            content: self.content.clone(),
            reasoning_content: self
                .reasoning
                .as_ref()
                .filter(|r| !r.text.is_empty())
                .map(|r| r.text.clone()),
            tool_calls: self.tool_calls.clone(),
            tool_call_id: self.tool_call_id.clone(),
        }
    }
}

/// An operation named a message the conversation does not have, or one it does not apply to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("no message {0} in this conversation")]
    NoNode(NodeId),
    #[error("message {id} is a {role} message, not {expected}")]
    WrongRole {
        id: NodeId,
        role: &'static str,
        expected: &'static str,
    },
    #[error("message {id} has {count} alternatives, not {index}+1")]
    NoAlternative {
        id: NodeId,
        index: usize,
        count: usize,
    },
}

/// One conversation, as saved in `conversations/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// Always [`FORMAT_VERSION`] when written by this code.
    pub version: u32,
    /// Sortable, unique, and the file's name ([`store::new_id`]).
    pub id: String,
    /// Empty until the first user message (which gives the default title) or a rename.
    pub title: String,
    /// Unix ms.
    pub created: u64,
    /// Unix ms of the last change; the sidebar lists the newest first.
    pub updated: u64,
    /// `None`: the default from the settings; `Some("")`: no system prompt.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// The first message the thread starts with.
    #[serde(default)]
    pub active_root: Option<NodeId>,
    /// The next node id to hand out.
    #[serde(default)]
    pub next_node: NodeId,
    #[serde(default)]
    pub nodes: Vec<Node>,
}

impl Conversation {
    /// An empty conversation with this id, created now.
    pub fn new(id: impl Into<String>) -> Conversation {
        let now = now_ms();
        Conversation {
            version: FORMAT_VERSION,
            id: id.into(),
            title: String::new(),
            created: now,
            updated: now,
            system_prompt: None,
            active_root: None,
            next_node: 0,
            nodes: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    fn index_of(&self, id: NodeId) -> Result<usize, EditError> {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or(EditError::NoNode(id))
    }

    /// The children of `parent` (`None`: the first messages), oldest first.
    pub fn children(&self, parent: Option<NodeId>) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(move |n| n.parent == parent)
    }

    /// The active child of `parent` (`None`: the active first message).
    fn active_of(&self, parent: Option<NodeId>) -> Option<NodeId> {
        match parent {
            None => self.active_root,
            Some(p) => self.node(p).and_then(|n| n.active_child),
        }
    }

    fn set_active(&mut self, parent: Option<NodeId>, child: Option<NodeId>) {
        match parent {
            None => self.active_root = child,
            Some(p) => {
                if let Some(n) = self.nodes.iter_mut().find(|n| n.id == p) {
                    n.active_child = child;
                }
            }
        }
    }

    /// The visible messages: from the active first message, following active children.
    pub fn thread(&self) -> Vec<&Node> {
        let mut out = Vec::new();
        let mut next = self.active_root;
        while let Some(id) = next {
            // The ids are unique and parents come first, so this ends; the bound is a guard.
            let Some(node) = self.node(id).filter(|_| out.len() < self.nodes.len()) else {
                break;
            };
            out.push(node);
            next = node.active_child;
        }
        out
    }

    /// The last visible message, where a new one goes.
    pub fn leaf(&self) -> Option<NodeId> {
        self.thread().last().map(|n| n.id)
    }

    /// Adds a message under `parent`, makes it the active child and returns its id.
    fn add(&mut self, parent: Option<NodeId>, role: Role, content: String) -> NodeId {
        self.add_node(parent, role, Reply::text(content, None), None)
    }

    /// Adds a message (its parts from `reply`) under `parent`, makes it the active child and
    /// returns its id.
    fn add_node(
        &mut self,
        parent: Option<NodeId>,
        role: Role,
        reply: Reply,
        tool_call_id: Option<String>,
    ) -> NodeId {
        let id = self
            .next_node
            .max(self.nodes.iter().map(|n| n.id + 1).max().unwrap_or(0));
        self.next_node = id + 1;
        let now = now_ms();
        self.nodes.push(Node {
            id,
            parent,
            role,
            content: reply.content,
            created: now,
            active_child: None,
            answer: reply.answer,
            reasoning: reply.reasoning,
            tool_calls: reply.tool_calls,
            tool_call_id,
        });
        self.set_active(parent, Some(id));
        self.updated = now.max(self.updated);
        id
    }

    /// Adds the user's message at the end of the thread; the first one gives the default title.
    pub fn push_user(&mut self, content: impl Into<String>) -> NodeId {
        let content = content.into();
        if self.title.trim().is_empty() {
            self.title = default_title(&content);
        }
        let leaf = self.leaf();
        self.add(leaf, Role::User, content)
    }

    /// Adds an answer at the end of the thread.
    pub fn push_assistant(&mut self, content: impl Into<String>, answer: Option<Answer>) -> NodeId {
        self.push_reply(Reply::text(content, answer))
    }

    /// Adds an answer with its reasoning and tool calls at the end of the thread.
    pub fn push_reply(&mut self, reply: Reply) -> NodeId {
        let leaf = self.leaf();
        self.add_node(leaf, Role::Assistant, reply, None)
    }

    /// Adds a tool's result for the call `call_id` at the end of the thread.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the window does not run tools yet")
    )]
    pub fn push_tool_result(
        &mut self,
        call_id: impl Into<String>,
        content: impl Into<String>,
    ) -> NodeId {
        let leaf = self.leaf();
        let reply = Reply::text(content, None);
        self.add_node(leaf, Role::Tool, reply, Some(call_id.into()))
    }

    fn expect_role(&self, id: NodeId, expected: Role) -> Result<&Node, EditError> {
        let node = self.node(id).ok_or(EditError::NoNode(id))?;
        if node.role == expected {
            Ok(node)
        } else {
            Err(EditError::WrongRole {
                id,
                role: node.role.as_str(),
                expected: expected.as_str(),
            })
        }
    }

    /// [`Self::regenerate_reply`] of a plain answer (tests).
    #[cfg(test)]
    pub fn regenerate(
        &mut self,
        node: NodeId,
        content: impl Into<String>,
        answer: Option<Answer>,
    ) -> Result<NodeId, EditError> {
        self.regenerate_reply(node, Reply::text(content, answer))
    }

    /// Adds a new answer (with its reasoning and tool calls) beside the assistant message `node`
    /// (an alternative) and shows it. The prompt it answers is [`Self::prompt_for`]`(node)`.
    pub fn regenerate_reply(&mut self, node: NodeId, reply: Reply) -> Result<NodeId, EditError> {
        let parent = self.expect_role(node, Role::Assistant)?.parent;
        Ok(self.add_node(parent, Role::Assistant, reply, None))
    }

    /// Adds an edited copy of the user message `node` beside it (a new branch; the old one
    /// stays) and shows it. Generate its answer from [`Self::chat_messages`], then
    /// [`Self::push_assistant`].
    pub fn edit_user(
        &mut self,
        node: NodeId,
        content: impl Into<String>,
    ) -> Result<NodeId, EditError> {
        let parent = self.expect_role(node, Role::User)?.parent;
        Ok(self.add(parent, Role::User, content.into()))
    }

    /// The messages before `node` in its thread, as sent to the engine (system prompt first):
    /// the prompt that produced it, and the one to regenerate it from.
    pub fn prompt_for(
        &self,
        node: NodeId,
        default_system: &str,
    ) -> Result<Vec<ChatMessage>, EditError> {
        let mut path = Vec::new();
        let mut next = self.node(node).ok_or(EditError::NoNode(node))?.parent;
        while let Some(id) = next {
            let Some(n) = self.node(id).filter(|_| path.len() < self.nodes.len()) else {
                break;
            };
            path.push(n);
            next = n.parent;
        }
        path.reverse();
        Ok(self.to_chat(path, default_system))
    }

    /// `node`'s place among its siblings (0-based) and how many there are, for "< 2/3 >".
    pub fn alternatives(&self, node: NodeId) -> Result<(usize, usize), EditError> {
        let parent = self.node(node).ok_or(EditError::NoNode(node))?.parent;
        let mut index = 0;
        let mut count = 0;
        for n in self.children(parent) {
            if n.id == node {
                index = count;
            }
            count += 1;
        }
        Ok((index, count))
    }

    /// Shows the `index`-th sibling of `node` (the thread continues with that sibling's active
    /// children) and returns its id.
    pub fn switch(&mut self, node: NodeId, index: usize) -> Result<NodeId, EditError> {
        let parent = self.node(node).ok_or(EditError::NoNode(node))?.parent;
        let siblings: Vec<NodeId> = self.children(parent).map(|n| n.id).collect();
        let Some(&target) = siblings.get(index) else {
            return Err(EditError::NoAlternative {
                id: node,
                index,
                count: siblings.len(),
            });
        };
        self.set_active(parent, Some(target));
        Ok(target)
    }

    /// Removes `node` and everything under it. Where it was the active child, the sibling
    /// before it (else the one after) becomes active.
    pub fn delete(&mut self, node: NodeId) -> Result<(), EditError> {
        let at = self.index_of(node)?;
        let parent = self.nodes[at].parent;
        let siblings: Vec<NodeId> = self.children(parent).map(|n| n.id).collect();
        // Parents come before children, so one forward pass collects the whole subtree.
        let mut doomed = vec![node];
        for n in &self.nodes[at + 1..] {
            if n.parent.is_some_and(|p| doomed.contains(&p)) {
                doomed.push(n.id);
            }
        }
        self.nodes.retain(|n| !doomed.contains(&n.id));
        if self.active_of(parent) == Some(node) {
            let pos = siblings.iter().position(|&s| s == node).unwrap_or(0);
            let replacement = pos
                .checked_sub(1)
                .map(|p| siblings[p])
                .or_else(|| siblings.get(pos + 1).copied());
            self.set_active(parent, replacement);
        }
        self.updated = now_ms().max(self.updated);
        Ok(())
    }

    /// Renames; an empty title goes back to the default one.
    pub fn rename(&mut self, title: &str) {
        let title = title.trim();
        self.title = if title.is_empty() {
            self.thread()
                .iter()
                .find(|n| n.role == Role::User)
                .map(|n| default_title(&n.content))
                .unwrap_or_default()
        } else {
            title.to_string()
        };
        self.updated = now_ms().max(self.updated);
    }

    /// Sets this conversation's system prompt (`None`: the default from the settings).
    pub fn set_system_prompt(&mut self, prompt: Option<String>) {
        self.system_prompt = prompt;
        self.updated = now_ms().max(self.updated);
    }

    /// The title to show: the title, or "New conversation" before there is one.
    pub fn display_title(&self) -> &str {
        if self.title.trim().is_empty() {
            "New conversation"
        } else {
            &self.title
        }
    }

    /// The system prompt in effect: this conversation's, else `default_system`; `None` when
    /// that is blank.
    pub fn effective_system_prompt<'a>(&'a self, default_system: &'a str) -> Option<&'a str> {
        let prompt = self.system_prompt.as_deref().unwrap_or(default_system);
        (!prompt.trim().is_empty()).then_some(prompt)
    }

    fn to_chat(&self, path: Vec<&Node>, default_system: &str) -> Vec<ChatMessage> {
        let system = self.effective_system_prompt(default_system);
        system
            .map(ChatMessage::system)
            .into_iter()
            .chain(path.into_iter().map(Node::to_chat))
            .collect()
    }

    /// The visible thread as the engine's messages, the system prompt in effect first (past
    /// answers with their reasoning and tool calls, tool results with their call's id).
    pub fn chat_messages(&self, default_system: &str) -> Vec<ChatMessage> {
        self.to_chat(self.thread(), default_system)
    }

    /// Whether the title or any message (in any branch) contains `query`, ignoring case. An
    /// empty query matches everything.
    pub fn matches(&self, query: &str) -> bool {
        let query = query.trim().to_lowercase();
        if query.is_empty() {
            return true;
        }
        let hit = |text: &str| text.to_lowercase().contains(&query);
        hit(&self.title) || self.nodes.iter().any(|n| hit(&n.content))
    }

    /// Checks the invariants of a conversation read from a file and repairs what can be
    /// repaired (active pointers, the id counter). The error says what is wrong.
    pub fn validate(&mut self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for n in &self.nodes {
            if n.id > MAX_NODE_ID {
                return Err(format!("message id {} is too large", n.id));
            }
            if let Some(p) = n.parent
                && !seen.contains(&p)
            {
                return Err(format!(
                    "message {} follows message {p}, which does not come before it",
                    n.id
                ));
            }
            if !seen.insert(n.id) {
                return Err(format!("two messages have the id {}", n.id));
            }
        }
        self.next_node = self
            .next_node
            .max(self.nodes.iter().map(|n| n.id + 1).max().unwrap_or(0));
        // An active pointer must name a child; otherwise the newest child is shown.
        let parents: Vec<Option<NodeId>> = std::iter::once(None)
            .chain(self.nodes.iter().map(|n| Some(n.id)))
            .collect();
        for parent in parents {
            let children: Vec<NodeId> = self.children(parent).map(|n| n.id).collect();
            let ok = match self.active_of(parent) {
                Some(a) => children.contains(&a),
                None => children.is_empty(),
            };
            if !ok {
                self.set_active(parent, children.last().copied());
            }
        }
        Ok(())
    }
}

/// The default title of a conversation that starts with `text`: its first line, trimmed, at most
/// [`TITLE_CHARS`] characters (cut at a word where one ends near there, with an ellipsis).
pub fn default_title(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let line: String = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= TITLE_CHARS {
        return line;
    }
    let cut: String = line.chars().take(TITLE_CHARS - 1).collect();
    let cut = match cut.rfind(' ') {
        Some(space) if space >= TITLE_CHARS / 2 => &cut[..space],
        _ => cut.as_str(),
    };
    format!("{}…", cut.trim_end())
}
