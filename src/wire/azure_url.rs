//! Azure OpenAI's two URL forms, from a provider's `base_url` (and `api_version`):
//!
//! - the v1 form, `https://RESOURCE.openai.azure.com/openai/v1`: the OpenAI paths are
//!   appended and the deployment name travels as `model` in the body;
//! - the deployment form, `https://RESOURCE.openai.azure.com` (or `.../openai`) with an
//!   `api-version` (in `api_version` or as `?api-version=` in the URL): requests go to
//!   `/openai/deployments/{deployment}/chat/completions?api-version=...`, the deployment
//!   being the routed model. A URL copied from the portal that names a deployment
//!   (`.../openai/deployments/NAME/chat/completions?api-version=...`) pins that deployment.

use http::uri::{Authority, Scheme};
use http::Uri;

use super::Endpoint;

/// A parsed Azure OpenAI endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureUrl {
    pub scheme: Scheme,
    pub authority: Authority,
    form: Form,
    api_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Form {
    /// `.../openai/v1`: the path the OpenAI paths are appended to.
    V1 { base: String },
    /// `.../openai`, with the deployment named in the path (pinned, or the routed model).
    Deployment { prefix: String, pinned: Option<String> },
}

impl AzureUrl {
    /// Parse `url`; `api_version` is the provider's `api_version` field.
    pub fn parse(url: &str, api_version: Option<&str>) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some("http" | "https") => uri.scheme().cloned().unwrap_or(Scheme::HTTPS),
            _ => return Err("the URL must start with http:// or https://".to_string()),
        };
        let authority = uri.authority().cloned().ok_or("the URL needs a host")?;
        let mut in_query = None;
        for pair in uri.query().unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("api-version", v)) if !v.is_empty() => in_query = Some(v.to_string()),
                _ => return Err(format!("unexpected query parameter `{pair}`: only `api-version` is allowed")),
            }
        }
        let api_version = match (in_query, api_version) {
            (Some(q), Some(f)) if q != f => {
                return Err(format!("`api-version={q}` in the URL contradicts `api_version: {f}`"))
            }
            (q, f) => q.or(f.map(str::to_string)),
        };
        if api_version.as_deref().is_some_and(|v| !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')) {
            return Err("`api-version` must look like 2024-10-21 or preview".to_string());
        }
        let path = uri.path().trim_end_matches('/');
        let form = if let Some(at) = path.find("/openai/v1") {
            let base = &path[..at + "/openai/v1".len()];
            if path.len() > base.len() && !path[base.len()..].starts_with('/') {
                return Err("the v1 form ends in `/openai/v1`".to_string());
            }
            Form::V1 { base: base.to_string() }
        } else if let Some(at) = path.find("/openai/deployments/") {
            let rest = &path[at + "/openai/deployments/".len()..];
            let name = rest.split('/').next().unwrap_or_default();
            if !valid_deployment(name) {
                return Err(format!("invalid deployment name `{name}` in the URL"));
            }
            Form::Deployment { prefix: path[..at + "/openai".len()].to_string(), pinned: Some(name.to_string()) }
        } else {
            let prefix = if path.ends_with("/openai") { path.to_string() } else { format!("{path}/openai") };
            Form::Deployment { prefix, pinned: None }
        };
        if matches!(form, Form::Deployment { .. }) && api_version.is_none() {
            return Err("the deployment URL form needs an api-version: set `api_version` (e.g. 2024-10-21), or use \
                        the v1 form `https://RESOURCE.openai.azure.com/openai/v1`"
                .to_string());
        }
        Ok(AzureUrl { scheme, authority, form, api_version })
    }

    /// The path and query of a request to `endpoint` for deployment `model`, with the
    /// client's `query` appended. `None` when `model` cannot be a deployment name.
    pub fn path_and_query(&self, endpoint: Endpoint, model: &str, query: Option<&str>) -> Option<String> {
        let mut pq = match &self.form {
            Form::V1 { base } => format!("{base}{}", endpoint.path()),
            Form::Deployment { prefix, .. } if endpoint == Endpoint::Responses => format!("{prefix}/responses"),
            Form::Deployment { prefix, pinned } => {
                let deployment = pinned.as_deref().unwrap_or(model);
                if !valid_deployment(deployment) {
                    return None;
                }
                format!("{prefix}/deployments/{deployment}{}", endpoint.path())
            }
        };
        let mut sep = '?';
        if let Some(v) = &self.api_version {
            pq.push_str("?api-version=");
            pq.push_str(v);
            sep = '&';
        }
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            pq.push(sep);
            pq.push_str(q);
        }
        Some(pq)
    }
}

/// Azure deployment names: letters, digits, `-`, `_` and `.`.
fn valid_deployment(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pq(url: &str, version: Option<&str>, endpoint: Endpoint, model: &str) -> String {
        AzureUrl::parse(url, version).unwrap().path_and_query(endpoint, model, None).unwrap()
    }

    #[test]
    fn v1_form_appends_the_openai_paths() {
        let url = "https://res.openai.azure.com/openai/v1/";
        assert_eq!(pq(url, None, Endpoint::ChatCompletions, "gpt-4o"), "/openai/v1/chat/completions");
        assert_eq!(pq(url, None, Endpoint::Responses, "gpt-4o"), "/openai/v1/responses");
        let u = AzureUrl::parse("https://res.openai.azure.com/openai/v1?api-version=preview", None).unwrap();
        assert_eq!(
            u.path_and_query(Endpoint::Embeddings, "e", Some("x=1")).unwrap(),
            "/openai/v1/embeddings?api-version=preview&x=1"
        );
    }

    #[test]
    fn deployment_form_names_the_model_as_deployment() {
        for url in ["https://res.openai.azure.com", "https://res.openai.azure.com/openai/"] {
            assert_eq!(
                pq(url, Some("2024-10-21"), Endpoint::ChatCompletions, "gpt-4o-prod"),
                "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
            );
        }
        let url = "https://res.openai.azure.com/openai/deployments/pinned/chat/completions?api-version=2024-10-21";
        assert_eq!(
            pq(url, None, Endpoint::ChatCompletions, "other"),
            "/openai/deployments/pinned/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            pq(url, None, Endpoint::Responses, "other"),
            "/openai/responses?api-version=2024-10-21",
            "the Responses API is per resource, not per deployment"
        );
        let u = AzureUrl::parse("https://res.openai.azure.com", Some("2024-10-21")).unwrap();
        assert_eq!(u.path_and_query(Endpoint::ChatCompletions, "../admin", None), None);
    }

    #[test]
    fn bad_urls_say_why() {
        let err = |url: &str, v: Option<&str>| AzureUrl::parse(url, v).unwrap_err();
        assert!(err("https://res.openai.azure.com", None).contains("api-version"));
        assert!(err("ftp://res", Some("1")).contains("http"));
        assert!(err("https://res.openai.azure.com?api-version=a", Some("b")).contains("contradicts"));
        assert!(err("https://res.openai.azure.com/openai/v1?key=1", None).contains("`key=1`"));
    }
}
