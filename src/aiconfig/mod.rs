//! AI configs: versioned prompt/model variants, compiled once, and the request edits
//! that turn an app's request into the chosen variant's upstream call.
//!
//! A [`Version`] is built when the snapshot is: provider resolved, model name and
//! parameters serialized, message templates compiled. Per request, [`Version::edits`]
//! renders the messages and lists the top-level body members to set — `model`, the
//! version's parameters, `messages`, and an agent's `tools` after the app's own — which
//! the proxy splices into the app's bytes. An agent-mode version's instructions are its
//! first (system) message.
//! Rendering spends one [`Budget`] per request: at most `render_limit` bytes of rendered
//! text (the snapshot sets it to `limits.max_request_body`) and
//! [`template::MAX_SECTION_ITERATIONS`] section repetitions, over all the messages.

pub mod template;

use prometheus::IntCounter;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderValue;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

pub use crate::config::aiconfig::AiMode;
use crate::config::aiconfig::{valid_tool_name, MessagesMode, Resolved, ToolConfig};
use crate::providers::Provider;
use template::{Budget, RenderError, Scope, Template};

/// Names a template may use.
pub const TEMPLATE_ROOTS: &[&str] = &["ldctx", "vars", "client"];

/// Roles a version's messages may have.
const ROLES: &[&str] = &["system", "developer", "user", "assistant"];

/// One compiled AI config version.
#[derive(Debug)]
pub struct Version {
    pub key: Box<str>,
    pub version: u32,
    pub provider: Arc<Provider>,
    pub enabled: bool,
    /// The provider's model name.
    pub model: Box<str>,
    /// `"model-name"` as JSON, ready to splice.
    model_json: Box<str>,
    /// `(key, JSON value)` of each parameter.
    parameters: Vec<(Box<str>, Box<str>)>,
    messages: Vec<Message>,
    mode: MessagesMode,
    /// `key@version`, for the `x-sluice-ai-config` header.
    pub header: HeaderValue,
    /// Template variables that were missing when rendering (they render empty).
    pub missing_variables: IntCounter,
    /// Most bytes of rendered text one request may produce.
    render_limit: usize,
    /// The version in LaunchDarkly's AI config shape, messages unrendered, for apps that
    /// call the provider themselves (OFREP): `_ldMeta` (enabled, version, mode), `model`
    /// (name, parameters), `messages`, `provider` (its name only — never a URL or key).
    pub ld_value: serde_json::Value,
    /// `completion` or `agent`.
    pub ai_mode: AiMode,
    /// An agent's tools as OpenAI function tools, comma-separated JSON (no brackets), and
    /// their names: added to every chat request's own `tools`.
    tools_json: Option<Box<str>>,
    tool_names: Vec<Box<str>>,
}

#[derive(Debug)]
struct Message {
    /// The role as JSON (`"system"`).
    role_json: Box<str>,
    content: Template,
}

/// What templates can read: `ldctx` (the app's context), `vars` (the
/// `x-sluice-variables` header) and `client` (the calling app).
pub struct RenderScope<'a> {
    pub ldctx: &'a Value,
    pub vars: &'a Value,
    pub client: &'a Value,
}

impl Scope for RenderScope<'_> {
    fn lookup(&self, name: &str) -> Option<&Value> {
        match name {
            "ldctx" => Some(self.ldctx),
            "vars" => Some(self.vars),
            "client" => Some(self.client),
            _ => None,
        }
    }
}

/// Why the app's request cannot take a version's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("`messages` must be an array of message objects")]
pub struct BadMessages;

/// Why a version's edits cannot be made for a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error(transparent)]
    BadMessages(#[from] BadMessages),
    /// The request's values would make the template at `messages[message]` render past
    /// the budget.
    #[error("messages[{message}]: {error}")]
    Render { message: usize, error: RenderError },
    /// The app's `tools` is not an array of tools, or a tool's name is not 1 to 64 of
    /// `a-z A-Z 0-9 _ -` (an agent's tools are merged in only beside names of that form).
    #[error("`tools` must be an array of tools named with 1 to 64 of a-z, A-Z, 0-9, _ and -")]
    BadTools,
    /// The app sent a tool of the same name as one of the agent's.
    #[error("the tool `{0}` is the AI config's own: the app may not send one of that name")]
    ToolClash(String),
}

/// A version in LaunchDarkly's AI config shape, messages (or an agent's instructions)
/// unrendered: `_ldMeta`, `model`, `provider`, and `messages` — or `instructions` and
/// `tools` for an agent.
fn ld_value(version: u32, resolved: &crate::config::aiconfig::Resolved) -> Value {
    let mut v = serde_json::json!({
        "_ldMeta": {"enabled": resolved.enabled, "version": version, "mode": resolved.mode.as_str()},
        "model": {"name": resolved.model, "parameters": resolved.parameters},
        "provider": {"name": resolved.provider},
    });
    match (&resolved.instructions, resolved.mode) {
        (Some(instructions), AiMode::Agent) => {
            v["instructions"] = Value::String(instructions.clone());
            v["tools"] = serde_json::json!(resolved.tools);
        }
        _ => {
            v["messages"] =
                resolved.messages.iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})).collect();
        }
    }
    v
}

/// An agent's tool as an OpenAI function tool.
fn openai_tool(t: &ToolConfig) -> Value {
    let mut function = serde_json::json!({"name": t.name, "parameters": t.parameters});
    if let Some(d) = &t.description {
        function["description"] = Value::String(d.clone());
    }
    serde_json::json!({"type": "function", "function": function})
}

impl Version {
    /// Compile a resolved version; problems come back as `(field, message)`.
    /// `missing_variables` counts the template variables requests did not have;
    /// `render_limit` is the most bytes of text one request's rendering may produce.
    pub fn compile(
        key: &str,
        version: u32,
        resolved: &Resolved,
        providers: &HashMap<String, Arc<Provider>>,
        missing_variables: IntCounter,
        render_limit: usize,
    ) -> Result<Version, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let provider = providers.get(&resolved.provider).cloned();
        if provider.is_none() {
            problems.push(("provider".to_string(), format!("unknown provider `{}`", resolved.provider)));
        }
        let mut messages = Vec::with_capacity(resolved.messages.len());
        // An agent's instructions are its first message.
        let content_field = |i: usize| match (resolved.mode, i) {
            (AiMode::Agent, 0) => "instructions".to_string(),
            _ => format!("messages[{i}].content"),
        };
        for (i, m) in resolved.messages.iter().enumerate() {
            if !ROLES.contains(&m.role.as_str()) {
                problems.push((
                    format!("messages[{i}].role"),
                    format!("unknown role `{}` (use {})", m.role, ROLES.join(", ")),
                ));
            }
            match Template::compile(&m.content) {
                Ok(t) => {
                    for root in t.roots() {
                        if !TEMPLATE_ROOTS.contains(&root) {
                            problems.push((
                                content_field(i),
                                format!("unknown template name `{root}` (use ldctx, vars or client)"),
                            ));
                        }
                    }
                    messages.push(Message { role_json: json_string(&m.role), content: t });
                }
                Err(e) => problems.push((content_field(i), e.to_string())),
            }
        }
        // Text every request renders must fit the budget, or every request would fail.
        let fixed: usize = messages.iter().map(|m| m.content.fixed_len()).sum();
        if fixed > render_limit {
            problems.push((
                "messages".to_string(),
                format!(
                    "the messages' text is {fixed} bytes, more than a request may render \
                     (limits.max_request_body: {render_limit} bytes)"
                ),
            ));
        }
        let tools_json = (!resolved.tools.is_empty()).then(|| {
            let tools: Vec<String> = resolved.tools.iter().map(|t| openai_tool(t).to_string()).collect();
            tools.join(",")
        });
        // An agent's tools go into every request: they must fit one, beside the messages.
        let tools_len = tools_json.as_ref().map_or(0, String::len);
        if fixed.saturating_add(tools_len) > render_limit && tools_len > 0 {
            problems.push((
                "tools".to_string(),
                format!(
                    "the tools are {tools_len} bytes as JSON: with the messages, more than a request may \
                     hold (limits.max_request_body: {render_limit} bytes)"
                ),
            ));
        }
        let header = HeaderValue::from_str(&format!("{key}@{version}"));
        if header.is_err() {
            problems.push((String::new(), "the AI config key cannot be sent in a header".to_string()));
        }
        match (provider, header) {
            (Some(provider), Ok(header)) if problems.is_empty() => Ok(Version {
                key: key.into(),
                version,
                provider,
                enabled: resolved.enabled,
                model: resolved.model.as_str().into(),
                model_json: json_string(&resolved.model),
                parameters: resolved
                    .parameters
                    .iter()
                    .map(|(k, v)| (k.as_str().into(), v.to_string().into()))
                    .collect(),
                messages,
                mode: resolved.messages_mode,
                header,
                missing_variables,
                render_limit,
                ld_value: ld_value(version, resolved),
                ai_mode: resolved.mode,
                tools_json: tools_json.map(String::into_boxed_str),
                tool_names: resolved.tools.iter().map(|t| t.name.as_str().into()).collect(),
            }),
            _ => Err(problems),
        }
    }

    /// The body members to set for this version: `model`, its parameters and, for chat
    /// completions with messages, the combined `messages`.
    pub fn edits<'s>(
        &'s self,
        chat: bool,
        app_messages: Option<&RawValue>,
        app_tools: Option<&RawValue>,
        scope: &RenderScope<'_>,
    ) -> Result<Vec<(&'s str, Cow<'s, str>)>, EditError> {
        let mut edits: Vec<(&str, Cow<'_, str>)> = Vec::with_capacity(2 + self.parameters.len());
        edits.push(("model", Cow::Borrowed(&*self.model_json)));
        for (k, v) in &self.parameters {
            edits.push((k, Cow::Borrowed(&**v)));
        }
        if chat && !self.messages.is_empty() {
            edits.push(("messages", Cow::Owned(self.messages_json(app_messages, scope)?)));
        }
        if let (true, Some(tools)) = (chat, &self.tools_json) {
            edits.push(("tools", Cow::Owned(self.tools_with(app_tools, tools)?)));
        }
        Ok(edits)
    }

    /// The app's `tools` with the agent's after them: the app's bytes as it sent them (its
    /// array's closing bracket moved), so what the provider receives is exactly both.
    fn tools_with(&self, app: Option<&RawValue>, tools: &str) -> Result<String, EditError> {
        // `"tools": null` is no tools, as the OpenAI API reads it.
        let Some(app) = app.filter(|a| a.get().trim() != "null") else { return Ok(format!("[{tools}]")) };
        let parsed: Vec<Value> = serde_json::from_str(app.get()).map_err(|_| EditError::BadTools)?;
        for t in &parsed {
            // Every name a tool carries (`function.name`, `custom.name`, `name`) is checked:
            // of the form providers take, and none an agent tool's, whatever its case.
            let names = ["/function/name", "/custom/name", "/name"].into_iter().filter_map(|p| t.pointer(p));
            for name in names {
                let name = name.as_str().filter(|n| valid_tool_name(n)).ok_or(EditError::BadTools)?;
                if self.tool_names.iter().any(|own| own.eq_ignore_ascii_case(name)) {
                    return Err(EditError::ToolClash(name.to_string()));
                }
            }
        }
        let text = app.get().trim_end();
        let open = text.strip_suffix(']').ok_or(EditError::BadTools)?.trim_end();
        Ok(if parsed.is_empty() { format!("[{tools}]") } else { format!("{open},{tools}]") })
    }

    /// The version as a request for `scope` would get it, for people to read: provider,
    /// model, parameters and its messages rendered (before the app's own messages).
    pub fn preview(&self, scope: &RenderScope<'_>) -> Result<Preview, EditError> {
        let mut budget = Budget::new(self.render_limit);
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.iter().enumerate() {
            let mut content = String::new();
            m.content
                .render(scope, &mut content, &mut budget)
                .map_err(|error| EditError::Render { message: i, error })?;
            let role: Value = serde_json::from_str(&m.role_json).unwrap_or(Value::Null);
            messages.push(RenderedMessage { role, content });
        }
        let parameters: serde_json::Map<String, Value> = self
            .parameters
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::from_str(v).unwrap_or(Value::Null)))
            .collect();
        Ok(Preview {
            key: self.key.to_string(),
            version: self.version,
            enabled: self.enabled,
            provider: self.provider.name.clone(),
            model: self.model.to_string(),
            parameters,
            messages_mode: match self.mode {
                MessagesMode::Prepend => "prepend",
                MessagesMode::Replace => "replace",
            }
            .to_string(),
            messages,
        })
    }

    /// The version's rendered messages combined with the app's.
    fn messages_json(&self, app: Option<&RawValue>, scope: &RenderScope<'_>) -> Result<String, EditError> {
        let app: Vec<&RawValue> = match app {
            None => Vec::new(),
            Some(raw) => serde_json::from_str(raw.get()).map_err(|_| BadMessages)?,
        };
        let mut out = String::with_capacity(256 + app.iter().map(|m| m.get().len() + 1).sum::<usize>());
        out.push('[');
        let mut content = String::new();
        let mut missing = 0;
        let mut budget = Budget::new(self.render_limit);
        for (i, m) in self.messages.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            content.clear();
            missing += m
                .content
                .render(scope, &mut content, &mut budget)
                .map_err(|error| EditError::Render { message: i, error })?;
            out.push_str("{\"role\":");
            out.push_str(&m.role_json);
            out.push_str(",\"content\":");
            push_json_string(&mut out, &content);
            out.push('}');
        }
        if missing > 0 {
            self.missing_variables.inc_by(missing as u64);
        }
        for m in app {
            if self.mode == MessagesMode::Replace && is_instruction(m)? {
                continue;
            }
            out.push(',');
            out.push_str(m.get());
        }
        out.push(']');
        Ok(out)
    }
}

/// Whether an app message is a system or developer message.
fn is_instruction(m: &RawValue) -> Result<bool, BadMessages> {
    #[derive(Deserialize)]
    struct Role<'a> {
        #[serde(borrow)]
        role: Option<Cow<'a, str>>,
    }
    let r: Role<'_> = serde_json::from_str(m.get()).map_err(|_| BadMessages)?;
    Ok(matches!(r.role.as_deref(), Some("system" | "developer")))
}

fn json_string(s: &str) -> Box<str> {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_string(&mut out, s);
    out.into()
}

/// `s` as a JSON string literal, byte for byte what `serde_json` writes, appended to `out`
/// without an intermediate value.
fn push_json_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// An AI config version as a context gets it: its messages rendered.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preview {
    pub key: String,
    pub version: u32,
    pub enabled: bool,
    /// The provider's name in the config (never its URL or key).
    pub provider: String,
    pub model: String,
    pub parameters: serde_json::Map<String, Value>,
    /// `prepend` (before the app's messages) or `replace` (in place of its system messages).
    pub messages_mode: String,
    pub messages: Vec<RenderedMessage>,
}

/// One rendered message of a [`Preview`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RenderedMessage {
    pub role: Value,
    pub content: String,
}

#[cfg(test)]
mod tests;
