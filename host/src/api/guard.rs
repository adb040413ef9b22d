//! Defences against other web pages and oversized input: the `Host` check (DNS rebinding), the
//! `Origin` check of state-changing requests and CORS (cross-site requests), the content types
//! that force browsers to preflight, and the size of JSON values.
//!
//! A page on any web site can make a browser send requests to a daemon on `localhost`. Three
//! things stop it: (1) a request whose `Host` is not an address of this daemon gets 421, so a
//! name the attacker re-points at 127.0.0.1 (DNS rebinding) cannot reach the API; (2) a
//! state-changing request carrying an `Origin` that is not in `--cors-origin` gets 403 (a
//! browser always sends `Origin` on a cross-origin `POST`, even a "simple" one that needs no
//! preflight, e.g. a bodiless cancel); (3) uploads must be `application/wasm` and JSON bodies
//! `application/json`, which a page can only send after a CORS preflight, and no CORS headers
//! are sent unless `--cors-origin` names origins.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{ApiError, AppState};

/// What the guards accept.
#[derive(Debug, Clone, Default)]
pub struct GuardConfig {
    /// The address the daemon listens on.
    pub listen: Option<SocketAddr>,
    /// Extra `Host` values (`name` or `name:port`), lower case.
    pub allowed_hosts: Vec<String>,
    /// Origins allowed to call from a browser.
    pub cors_origins: Vec<String>,
    /// `/metrics` without a key.
    pub metrics_public: bool,
}

/// Splits `host[:port]` (IPv6 in brackets) into the lower-case host and the port.
fn split_host(value: &str) -> (String, Option<&str>) {
    if let Some(rest) = value.strip_prefix('[') {
        let (h, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (h.to_ascii_lowercase(), after.strip_prefix(':'));
    }
    match value.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_ascii_lowercase(), Some(p)),
        _ => (value.to_ascii_lowercase(), None),
    }
}

/// Whether a `Host` value names this daemon: `localhost` or a loopback address (any port),
/// the listen address (any IP literal when listening on all addresses: the daemon cannot tell
/// which of its addresses a client used, and an IP literal cannot be re-pointed by DNS), or an
/// entry of `--allowed-hosts` (`name` for any port, `name:port` for that port).
pub fn host_allowed(cfg: &GuardConfig, value: &str) -> bool {
    let (host, port) = split_host(value.trim());
    let host = host.trim_end_matches('.');
    if host == "localhost" {
        return true;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        let listen = cfg.listen.map(|a| a.ip());
        return ip.is_loopback() || listen.is_some_and(|l| l.is_unspecified() || l == ip);
    }
    cfg.allowed_hosts.iter().any(|a| {
        let (ah, ap) = split_host(a);
        ah == host && (ap.is_none() || ap == port)
    })
}

/// The middleware of the `Host` check: 421 for a host that is not this daemon's.
pub(super) async fn check_host(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let value = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_string));
    match value {
        Some(v) if host_allowed(&s.guard, &v) => next.run(req).await,
        Some(v) => {
            let shown: String = v.chars().take(100).collect();
            tracing::warn!(host = %shown, path = %req.uri().path(), "rejected a request for another host");
            ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected_request",
                format!(
                    "host `{shown}` is not an address of this daemon; if it is (a proxy or a DNS name), \
                     start it with --allowed-hosts {}",
                    split_host(&shown).0
                ),
            )
            .into_response()
        }
        None => ApiError::new(StatusCode::MISDIRECTED_REQUEST, "misdirected_request", "the request has no Host header")
            .into_response(),
    }
}

/// The middleware of the `Origin` check: a state-changing request (not GET, HEAD or OPTIONS)
/// from a browser page whose origin is not in `--cors-origin` gets 403.
pub(super) async fn check_origin(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let safe = [Method::GET, Method::HEAD, Method::OPTIONS].contains(req.method());
    if !safe && let Some(origin) = req.headers().get(header::ORIGIN) {
        let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
        let allowed = origin
            .to_str()
            .is_ok_and(|o| s.guard.cors_origins.iter().any(|a| a == o) || host.is_some_and(|h| same_origin(o, h)));
        if !allowed {
            let shown: String = String::from_utf8_lossy(origin.as_bytes()).chars().take(100).collect();
            tracing::warn!(origin = %shown, path = %req.uri().path(), "rejected a cross-origin request");
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                format!("requests from web pages of origin `{shown}` are not allowed; see --cors-origin"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Whether `origin` is the daemon's own (`http://HOST` or `https://HOST` with the request's
/// `Host`): a page it served, i.e. the dashboard. The `Host` check runs first, so a page of
/// another site re-pointed here by DNS never gets this far.
pub fn same_origin(origin: &str, host: &str) -> bool {
    let rest = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    rest.is_some_and(|r| r.eq_ignore_ascii_case(host.trim()))
}

/// CORS for the configured origins (`None` without any: then no CORS header is ever sent).
pub fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    let values: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    if values.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(values))
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("idempotency-key")])
            .max_age(Duration::from_secs(600)),
    )
}

/// The media type of a request without parameters, lower case (`application/json`).
fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// 415 unless the body is declared as `expected`.
pub(super) fn require_content_type(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    match media_type(headers) {
        Some(t) if t == expected => Ok(()),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "send this body with `content-type: {expected}` (got {})",
                other.map_or_else(|| "none".to_string(), |t| format!("`{t}`"))
            ),
        )),
    }
}

/// An `io::Write` that counts bytes and fails past a limit.
struct Counter {
    n: usize,
    max: usize,
}

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.n = self.n.saturating_add(buf.len());
        if self.n > self.max {
            return Err(io::Error::other("too large"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The size of `v` as compact JSON text, or `None` if it is more than `max` bytes (counting
/// stops there).
pub(super) fn json_size(v: &Value, max: usize) -> Option<usize> {
    let mut c = Counter { n: 0, max };
    serde_json::to_writer(&mut c, v).ok().map(|()| c.n)
}

/// 413 if `v` (`what`: "arguments", "payload") is larger than `max` bytes as JSON text.
pub(super) fn check_size(what: &str, v: &Value, max: usize) -> Result<(), ApiError> {
    match json_size(v, max) {
        Some(_) => Ok(()),
        None => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("{what} larger than {max} bytes as JSON (the daemon's --max-args-bytes)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_this_daemon_pass_and_others_do_not() {
        let cfg = GuardConfig {
            listen: Some("10.0.0.5:7700".parse().unwrap_or_else(|e| panic!("{e}"))),
            allowed_hosts: vec!["warden.internal".into(), "proxy.example.com:8443".into()],
            ..GuardConfig::default()
        };
        for ok in [
            "localhost",
            "localhost:7700",
            "LOCALHOST:1",
            "127.0.0.1",
            "127.0.0.1:7700",
            "[::1]:7700",
            "[::1]",
            "10.0.0.5:7700",
            "warden.internal",
            "warden.internal:7700",
            "proxy.example.com:8443",
        ] {
            assert!(host_allowed(&cfg, ok), "{ok}");
        }
        for bad in ["evil.example.com", "evil.example.com:7700", "10.0.0.6:7700", "proxy.example.com:80", ""] {
            assert!(!host_allowed(&cfg, bad), "{bad}");
        }
        let any = GuardConfig { listen: Some("0.0.0.0:7700".parse().unwrap_or_else(|e| panic!("{e}"))), ..cfg };
        assert!(host_allowed(&any, "10.0.0.6:7700"));
        assert!(!host_allowed(&any, "rebound.example.com:7700"));
    }

    #[test]
    fn only_the_daemons_own_origin_is_same_origin() {
        assert!(same_origin("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(same_origin("https://warden.example:443", "warden.example:443"));
        assert!(!same_origin("http://127.0.0.1:8081", "127.0.0.1:8080"));
        assert!(!same_origin("http://evil.example", "127.0.0.1:8080"));
        assert!(!same_origin("null", "127.0.0.1:8080"));
        assert!(!same_origin("http://127.0.0.1:8080.evil.example", "127.0.0.1:8080"));
    }

    #[test]
    fn sizes_stop_counting_past_the_limit() {
        let v = serde_json::json!({"a": "x".repeat(100)});
        assert_eq!(json_size(&v, 1_000), Some(serde_json::to_string(&v).map(|s| s.len()).unwrap_or(0)));
        assert_eq!(json_size(&v, 50), None);
        assert!(check_size("arguments", &v, 50).is_err());
    }
}
