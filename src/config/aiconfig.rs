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
}

/// Parameters a version may not set: sluice or the app controls them.
pub const RESERVED_PARAMETERS: &[&str] = &["model", "messages", "stream", "prompt", "input"];

impl VersionConfig {
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
                }
            }
            None => Resolved {
                provider: self.provider.clone().unwrap_or_default(),
                model: self.model.clone().unwrap_or_default(),
                parameters: self.parameters.clone(),
                messages: self.messages.clone(),
                messages_mode: self.messages_mode,
                enabled: self.enabled,
            },
        };
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
