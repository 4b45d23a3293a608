//! The web console under `/ui/` on the admin listener: static assets embedded in the
//! binary (`src/admin/ui/`: plain ES modules, Preact with htm vendored, no build step),
//! which speak only the public admin API with a bearer token the tab keeps in its session
//! storage — no cookies, so no CSRF surface. Every answer carries a strict
//! `Content-Security-Policy`: only this origin's scripts, styles and API; nothing inline,
//! nothing from elsewhere.

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::wire::body::{self, Body};

/// The policy of every console answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The assets: path under `/ui/`, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("", "text/html; charset=utf-8", include_bytes!("ui/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("ui/app.js")),
    ("charts.js", "text/javascript; charset=utf-8", include_bytes!("ui/charts.js")),
    ("diff.js", "text/javascript; charset=utf-8", include_bytes!("ui/diff.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("ui/style.css")),
    ("vendor/preact-htm.mjs", "text/javascript; charset=utf-8", include_bytes!("ui/vendor/preact-htm.mjs")),
    ("vendor/LICENSE-preact", "text/plain; charset=utf-8", include_bytes!("ui/vendor/LICENSE-preact")),
    ("vendor/LICENSE-htm", "text/plain; charset=utf-8", include_bytes!("ui/vendor/LICENSE-htm")),
];

/// Whether `path` is the console's.
pub fn is_console(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// Serve one console request: an asset, or a redirect from `/ui` to `/ui/`.
pub fn serve<B>(req: &Request<B>) -> Response<Body> {
    let path = req.uri().path();
    let mut resp = if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = body::text(StatusCode::METHOD_NOT_ALLOWED, "the console's pages are read with GET");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else if path == "/ui" {
        let mut r = body::text(StatusCode::PERMANENT_REDIRECT, "the console is at /ui/");
        r.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/ui/"));
        r
    } else {
        let name = path.strip_prefix("/ui/").unwrap_or("");
        match ASSETS.iter().find(|(n, _, _)| *n == name) {
            Some((_, kind, bytes)) => {
                let bytes: &'static [u8] = if req.method() == Method::HEAD { &[] } else { bytes };
                body::response(StatusCode::OK, kind, bytes::Bytes::from_static(bytes))
            }
            None => body::text(StatusCode::NOT_FOUND, "no such page of the console"),
        }
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Response<Body> {
        serve(&Request::get(path).body(()).unwrap())
    }

    #[test]
    fn every_asset_is_served_with_the_policy_and_nothing_else_is() {
        for (name, kind, bytes) in ASSETS {
            let resp = get(&format!("/ui/{name}"));
            assert_eq!(resp.status(), StatusCode::OK, "{name}");
            assert_eq!(resp.headers()[header::CONTENT_TYPE], *kind);
            assert_eq!(resp.headers()[header::CONTENT_SECURITY_POLICY], CSP);
            assert!(!bytes.is_empty());
        }
        assert_eq!(get("/ui/../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/ui/nope.js").status(), StatusCode::NOT_FOUND);
        let redirect = get("/ui");
        assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(redirect.headers()[header::LOCATION], "/ui/");
        let post = serve(&Request::post("/ui/").body(()).unwrap());
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    /// The policy allows no inline script or style, so the pages must have none, and no
    /// asset may reach another origin.
    #[test]
    fn the_pages_hold_nothing_the_policy_would_block() {
        let html = std::str::from_utf8(ASSETS[0].2).unwrap();
        assert!(!html.contains("<style"), "inline style in index.html");
        assert!(!html.contains(" style="), "style attribute in index.html");
        for tag in html.split("<script").skip(1) {
            assert!(tag.trim_start().starts_with("type=\"module\" src=\"/ui/"), "inline or foreign script: {tag}");
        }
        for (name, _, bytes) in ASSETS {
            let text = String::from_utf8_lossy(bytes);
            if name.starts_with("vendor/") {
                continue;
            }
            for scheme in ["http://", "https://", "//cdn", "fonts.googleapis"] {
                assert!(!text.contains(scheme), "{name} names another origin ({scheme})");
            }
        }
    }
}
