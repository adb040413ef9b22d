//! The web dashboard at `/ui`: a single-page app of plain ES modules and one style sheet
//! (`host/ui/`), embedded in the binary at build time, so the daemon serves it with nothing
//! fetched from anywhere else. Every `/ui/…` path answers with the app's page (the browser's
//! History API routes it); the assets live under `/ui/assets/{version}/…`, where the version
//! is a digest of their content, so they are cached for good and a new build is a new URL.
//! The page itself needs no key: it asks for one when the API answers 401 and sends it as
//! `Authorization: Bearer` (the live stream too: it is read with `fetch`, not `EventSource`,
//! so the key never goes into a URL).

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};

/// One embedded file of the app.
struct Asset {
    path: &'static str,
    body: &'static [u8],
    content_type: &'static str,
}

macro_rules! assets {
    ($($path:literal => $ty:expr),+ $(,)?) => {
        &[$(Asset {
            path: $path,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $path)),
            content_type: $ty,
        }),+]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// The app's files, as built into the binary.
const ASSETS: &[Asset] = assets!(
    "style.css" => "text/css; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
    "app.js" => JS,
    "api.js" => JS,
    "dom.js" => JS,
    "charts.js" => JS,
    "pages/overview.js" => JS,
    "pages/invocations.js" => JS,
    "pages/invocation.js" => JS,
    "pages/workflows.js" => JS,
    "pages/tasks.js" => JS,
    "pages/triggers.js" => JS,
);

/// The page every `/ui/…` path answers with; `{{ASSETS}}` becomes the assets' versioned base.
const INDEX: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/index.html"));

/// A digest of every asset: the path segment that makes their URLs change with their content.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut h = Sha256::new();
    for a in ASSETS {
        h.update(a.path.as_bytes());
        h.update((a.body.len() as u64).to_le_bytes());
        h.update(a.body);
    }
    h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
});

static PAGE: LazyLock<String> = LazyLock::new(|| INDEX.replace("{{ASSETS}}", &format!("/ui/assets/{}", *VERSION)));

/// What the dashboard's responses allow the page to do: only its own scripts, styles and API.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes (no key needed: see `auth::required_role`).
pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/ui", get(page)).route("/ui/", get(page)).route("/ui/{*path}", get(deep_page))
}

fn with_headers(mut r: Response, content_type: &'static str, cache: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

/// `GET /ui`: the app's page (never cached: it names the current assets).
async fn page() -> Response {
    with_headers(PAGE.as_str().into_response(), "text/html; charset=utf-8", "no-cache")
}

/// `GET /ui/{path}`: an asset under `assets/`, else the same page for every route of the app.
async fn deep_page(Path(path): Path<String>) -> Response {
    match path.strip_prefix("assets/") {
        Some(rest) => asset(rest),
        None if path == "assets" => asset(""),
        None => page().await,
    }
}

/// `assets/{version}/{path}`: an embedded file. Under the current version it is cached for a
/// year (its URL changes with its content); under another (a page loaded before an upgrade)
/// it is served but not cached. 404 for anything else.
fn asset(rest: &str) -> Response {
    let (version, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(a) = ASSETS.iter().find(|a| a.path == path) else {
        return ApiError::not_found(format!("no dashboard asset `{path}`")).into_response();
    };
    let cache = if version == *VERSION { "public, max-age=31536000, immutable" } else { "no-cache" };
    with_headers((StatusCode::OK, a.body).into_response(), a.content_type, cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_existing_assets_under_the_version() {
        let base = format!("/ui/assets/{}/", *VERSION);
        assert_eq!(VERSION.len(), 12);
        assert!(!PAGE.contains("{{ASSETS}}"));
        let mut named = 0;
        for part in PAGE.split(&base).skip(1) {
            let file = part.split('"').next().unwrap_or_default();
            assert!(ASSETS.iter().any(|a| a.path == file), "the page names `{file}`, which is not embedded");
            named += 1;
        }
        assert!(named >= 3, "the page should load the style sheet, the icon and the app: {named}");
    }

    #[test]
    fn every_module_import_is_embedded() {
        // A module that imports a file missing from ASSETS would fail in the browser only.
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(a.body).unwrap_or_default();
            let dir = a.path.rsplit_once('/').map_or("", |(d, _)| d);
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(spec) = line.split(['\'', '"']).nth(1) else { continue };
                let mut parts: Vec<&str> = if dir.is_empty() { vec![] } else { dir.split('/').collect() };
                for seg in spec.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let target = parts.join("/");
                assert!(
                    ASSETS.iter().any(|b| b.path == target),
                    "{} imports `{spec}` ({target}), not embedded",
                    a.path
                );
            }
        }
    }
}
