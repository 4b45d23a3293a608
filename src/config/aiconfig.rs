//! AI configs in the config file: a key with an ordered list of immutable versions,
//! each naming a provider, a model, parameters and prompt messages. A version may also
//! be written as LaunchDarkly's AI config JSON (`_ldMeta`, `model`, `provider`,
//! `messages`), which converts to the same model.

use serde::Deserialize;
use serde_json::{Map, Value};

/// An AI config: its versions, oldest first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiConfigConfig {
    #[serde(default)]
    pub description: Option<String>,
    pub versions: Vec<VersionConfig>,
}

/// One immutable version of an AI config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionConfig {
    /// The version number: 1, 2, 3... in order.
    pub version: u32,
    /// The provider (a name under `providers`).
    #[serde(default)]
    pub provider: Option<String>,
    /// The model name the provider knows.
    #[serde(default)]
    pub model: Option<String>,
    /// Request parameters the version sets (temperature, max_tokens, tools...). They win
    /// over the app's values for the same keys; everything else the app sent is kept.
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// Prompt messages; `content` is a Mustache template.
    #[serde(default)]
    pub messages: Vec<MessageConfig>,
    /// How the messages combine with the app's.
    #[serde(default)]
    pub messages_mode: MessagesMode,
    /// A disabled version is not served (see the flag's `when_disabled`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The version as LaunchDarkly AI config JSON, instead of the fields above.
    #[serde(default)]
    pub launchdarkly: Option<LdAiConfig>,
    /// `completion` (default: a prompt of messages) or `agent` (instructions and tools).
    #[serde(default)]
    pub mode: AiMode,
    /// `mode: agent`: the agent's instructions (a Mustache template), sent as the system
    /// message before the app's messages.
    #[serde(default)]
    pub instructions: Option<String>,
    /// `mode: agent`: tools added to the app's own in every request (OpenAI's function
    /// tools), and handed to apps that fetch the config.
    #[serde(default)]
    pub tools: Vec<ToolConfig>,
}

/// What a version is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AiMode {
    #[default]
    Completion,
    Agent,
}

impl AiMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AiMode::Completion => "completion",
            AiMode::Agent => "agent",
        }
    }
}

/// A tool of an agent-mode version.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// 1–64 of `a-z A-Z 0-9 _ -`, unique in the version.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its arguments' JSON Schema (an object schema).
    #[serde(default = "empty_object_schema")]
    pub parameters: Value,
}

/// A tool name as OpenAI and Anthropic take one: 1 to 64 of `a-z A-Z 0-9 _ -`.
pub fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The most tools an agent may carry (OpenAI's own limit per request).
pub const MAX_TOOLS: usize = 128;

fn empty_object_schema() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

fn yes() -> bool {
    true
}

/// A prompt message.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MessageConfig {
    pub role: String,
    pub content: String,
}

/// How a version's messages combine with the messages the app sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessagesMode {
    /// The version's messages go before all of the app's.
    #[default]
    Prepend,
    /// The version's messages take the place of the app's system (and developer)
    /// messages; the app's other messages follow.
    Replace,
}

/// LaunchDarkly's AI config variation JSON.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LdAiConfig {
    #[serde(rename = "_ldMeta")]
    pub ld_meta: Option<LdMeta>,
    pub model: Option<LdModel>,
    pub provider: Option<LdProvider>,
    pub messages: Vec<MessageConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LdMeta {
    pub enabled: Option<bool>,
    pub variation_key: Option<String>,
    pub version: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LdModel {
    pub name: String,
    pub parameters: Map<String, Value>,
    /// Free-form data; sluice does not use it.
    pub custom: Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LdProvider {
    pub name: String,
}

/// A version with the LaunchDarkly form resolved: what sluice serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub provider: String,
    pub model: String,
    pub parameters: Map<String, Value>,
    pub messages: Vec<MessageConfig>,
    pub messages_mode: MessagesMode,
    pub enabled: bool,
    pub mode: AiMode,
    /// `mode: agent`: the instructions (also the first of `messages`, as a system message).
    pub instructions: Option<String>,
    pub tools: Vec<ToolConfig>,
}

/// Parameters a version may not set: sluice or the app controls them.
pub const RESERVED_PARAMETERS: &[&str] = &["model", "messages", "stream", "prompt", "input"];

impl VersionConfig {
    /// An agent's fields: instructions and tools only in `mode: agent`, which needs
    /// instructions; tool names valid and unique; the instructions become the first,
    /// system, message.
    fn check_agent(&self, resolved: &mut Resolved, problems: &mut Vec<(String, String)>) {
        let mut problem = |field: String, message: &str| problems.push((field, message.to_string()));
        if self.mode == AiMode::Completion {
            if self.instructions.is_some() {
                problem(
                    "instructions".into(),
                    "instructions are for `mode: agent` (a completion's prompt is `messages`)",
                );
            }
            if !self.tools.is_empty() {
                problem("tools".into(), "tools are for `mode: agent` (or set `parameters.tools` to replace the app's)");
            }
            return;
        }
        if self.launchdarkly.is_some() {
            problem("launchdarkly".into(), "an agent is written in sluice's form: mode, instructions, tools");
        }
        match &self.instructions {
            Some(i) if !i.trim().is_empty() => {
                resolved.messages.insert(0, MessageConfig { role: "system".into(), content: i.clone() });
            }
            _ => problem("instructions".into(), "an agent needs its instructions"),
        }
        if !self.messages.is_empty() {
            problem("messages".into(), "an agent's prompt is its `instructions`");
        }
        if self.parameters.contains_key("tools") {
            problem("parameters.tools".into(), "an agent's tools go under `tools` (they are added to the app's)");
        }
        if self.tools.len() > MAX_TOOLS {
            problem("tools".into(), &format!("{} tools: at most {MAX_TOOLS}", self.tools.len()));
        }
        let mut seen = std::collections::HashMap::new();
        for (i, tool) in self.tools.iter().enumerate() {
            if !valid_tool_name(&tool.name) {
                problem(format!("tools[{i}].name"), "1 to 64 of a-z, A-Z, 0-9, _ and -");
            }
            // Unique whatever the case: a model told of `Search` and `search` confuses them.
            if let Some(first) = seen.insert(tool.name.to_ascii_lowercase(), i) {
                let message =
                    format!("`{}` is already the name of tools[{first}]: tool names must be unique", tool.name);
                problem(format!("tools[{i}].name"), &message);
            }
            let schema = &tool.parameters;
            if schema.get("type").and_then(Value::as_str) != Some("object")
                || schema.get("properties").is_some_and(|p| !p.is_object())
            {
                problem(
                    format!("tools[{i}].parameters"),
                    "a JSON Schema of `type: object` (its `properties` an object)",
                );
            }
        }
    }

    /// The version as served, or the problems with it as `(field, message)`.
    pub fn resolve(&self) -> Result<Resolved, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let resolved = match &self.launchdarkly {
            Some(ld) => {
                let sluice_fields = self.provider.is_some()
                    || self.model.is_some()
                    || !self.parameters.is_empty()
                    || !self.messages.is_empty();
                if sluice_fields {
                    problems.push((
                        "launchdarkly".to_string(),
                        "set either `launchdarkly` or provider/model/parameters/messages, not both".to_string(),
                    ));
                }
                let model = ld.model.clone().unwrap_or_default();
                Resolved {
                    provider: ld.provider.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
                    model: model.name,
                    parameters: model.parameters,
                    messages: ld.messages.clone(),
                    messages_mode: self.messages_mode,
                    enabled: self.enabled && ld.ld_meta.as_ref().and_then(|m| m.enabled).unwrap_or(true),
                    mode: AiMode::Completion,
                    instructions: None,
                    tools: Vec::new(),
                }
            }
            None => Resolved {
                provider: self.provider.clone().unwrap_or_default(),
                model: self.model.clone().unwrap_or_default(),
                parameters: self.parameters.clone(),
                messages: self.messages.clone(),
                messages_mode: self.messages_mode,
                enabled: self.enabled,
                mode: self.mode,
                instructions: self.instructions.clone(),
                tools: self.tools.clone(),
            },
        };
        let mut resolved = resolved;
        self.check_agent(&mut resolved, &mut problems);
        let (provider_field, model_field) = if self.launchdarkly.is_some() {
            ("launchdarkly.provider.name", "launchdarkly.model.name")
        } else {
            ("provider", "model")
        };
        if resolved.provider.is_empty() {
            problems.push((provider_field.to_string(), "a version needs a provider".to_string()));
        }
        if resolved.model.is_empty() {
            problems.push((model_field.to_string(), "a version needs a model".to_string()));
        }
        for key in resolved.parameters.keys() {
            if RESERVED_PARAMETERS.contains(&key.as_str()) {
                problems.push((format!("parameters.{key}"), format!("`{key}` cannot be set by an AI config")));
            }
        }
        if problems.is_empty() {
            Ok(resolved)
        } else {
            Err(problems)
        }
    }
}
