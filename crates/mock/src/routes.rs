//! Which API a request targets, per kind: the OpenAI paths, Anthropic's `/v1/messages`, and
//! Azure's deployment and `v1` paths.

use http::Method;

use super::knobs::query_param;
use super::MockKind;

/// The routes subject to knobs, scripts and error injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Chat,
    Completions,
    Embeddings,
    Models,
    Responses,
    Messages,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// `deployment`: the Azure deployment named in the path (the answers' model).
    Api {
        api: Api,
        deployment: Option<&'a str>,
    },
    Health,
    /// `GET /mock/judge/requests`: the judge log.
    JudgeRequests,
    /// Known path, wrong method; carries the value of the `allow` header.
    WrongMethod(&'static str),
    NotFound,
}

/// Route one request for a mock of `kind`.
pub(crate) fn route<'a>(kind: MockKind, method: &Method, path: &'a str, query: Option<&str>) -> Route<'a> {
    let (route, post) = if path == "/healthz" {
        (Route::Health, false)
    } else if path == "/mock/judge/requests" {
        (Route::JudgeRequests, false)
    } else {
        let found = match kind {
            MockKind::OpenAi => openai(path).map(|(api, post)| (api, None, post)),
            MockKind::Anthropic => (path == "/v1/messages").then_some((Api::Messages, None, true)),
            MockKind::Azure => azure(path, query).map(|(api, deployment)| (api, deployment, true)),
        };
        let Some((api, deployment, post)) = found else {
            return Route::NotFound;
        };
        (Route::Api { api, deployment }, post)
    };
    match (post, method) {
        (true, &Method::POST) | (false, &Method::GET | &Method::HEAD) => route,
        (true, _) => Route::WrongMethod("POST"),
        (false, _) => Route::WrongMethod("GET, HEAD"),
    }
}

/// The OpenAI API and whether it takes a POST (else a GET).
fn openai(path: &str) -> Option<(Api, bool)> {
    Some(match path {
        "/v1/chat/completions" => (Api::Chat, true),
        "/v1/completions" => (Api::Completions, true),
        "/v1/embeddings" => (Api::Embeddings, true),
        "/v1/models" => (Api::Models, false),
        "/v1/responses" => (Api::Responses, true),
        _ => return None,
    })
}

/// An Azure API (all POST) and the deployment named in its path. A deployment path
/// without `api-version` is not found, as on Azure.
fn azure<'a>(path: &'a str, query: Option<&str>) -> Option<(Api, Option<&'a str>)> {
    match path {
        "/openai/v1/chat/completions" => Some((Api::Chat, None)),
        "/openai/v1/responses" => Some((Api::Responses, None)),
        _ => {
            let (deployment, rest) = path.strip_prefix("/openai/deployments/")?.split_once('/')?;
            if deployment.is_empty() || rest != "chat/completions" {
                return None;
            }
            query.and_then(|q| query_param(q, "api-version")).filter(|v| !v.is_empty())?;
            Some((Api::Chat, Some(deployment)))
        }
    }
}
