//! A small HTTP client of the daemon's API for the CLI; API errors become messages with the
//! daemon's own error text and the exit code of their kind (a refused request is usage, an
//! unreachable or failing daemon is [`exit::UNREACHABLE`]).

use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use super::Failure;
use super::output::exit;

/// Talks to one daemon.
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the daemon at `base` (e.g. `http://127.0.0.1:7700`) that sends `api_key`,
    /// if any, as `Authorization: Bearer KEY` on every request.
    pub fn new(base: &str, api_key: Option<&str>) -> anyhow::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = api_key {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .context("the API key must be visible ASCII (check --api-key / WARDEN_API_KEY)")?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let http =
            reqwest::Client::builder().default_headers(headers).build().context("cannot build an HTTP client")?;
        Ok(Self { base: normalize(base), http })
    }

    async fn read(&self, what: &str, resp: Result<reqwest::Response, reqwest::Error>) -> anyhow::Result<Value> {
        let resp = resp.map_err(|e| {
            Failure::new(
                exit::UNREACHABLE,
                format!("cannot reach the daemon at {} ({what}): {e}; is `warden serve` running? (--url or WARDEN_URL say where)", self.base),
            )
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_client_error() || status.is_server_error() {
            let msg = body["error"]["message"].as_str().unwrap_or("no details");
            let code = if status.is_server_error() { exit::UNREACHABLE } else { exit::USAGE };
            if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
                return Err(Failure::new(
                    code,
                    format!(
                        "{what} failed: {status}: {msg} (pass a key of the right role with --api-key or WARDEN_API_KEY)"
                    ),
                )
                .into());
            }
            return Err(Failure::new(code, format!("{what} failed: {status}: {msg}")).into());
        }
        Ok(body)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.read(path, self.http.get(format!("{}{path}", self.base)).send().await).await
    }

    /// `GET path?query`.
    pub async fn get_query(&self, path: &str, q: &[(&str, String)]) -> anyhow::Result<Value> {
        self.read(path, self.http.get(format!("{}{path}", self.base)).query(q).send().await).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.read(path, self.http.post(format!("{}{path}", self.base)).json(body).send().await).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.read(path, self.http.put(format!("{}{path}", self.base)).json(body).send().await).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.read(path, self.http.patch(format!("{}{path}", self.base)).json(body).send().await).await
    }

    /// `DELETE path` (an empty answer is `null`).
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.read(path, self.http.delete(format!("{}{path}", self.base)).send().await).await
    }

    /// Uploads a component.
    pub async fn deploy(&self, name: &str, bytes: Vec<u8>) -> anyhow::Result<Value> {
        let req = self
            .http
            .post(format!("{}/v1/components", self.base))
            .query(&[("name", name)])
            .header("content-type", "application/wasm")
            .body(bytes);
        self.read("deploy", req.send().await).await
    }

    /// Routes one call.
    pub async fn call(&self, task: &str, args: &Value) -> anyhow::Result<Value> {
        self.call_with(task, args, &Value::Null).await
    }

    /// Routes a call with its `options` (`null`: none).
    pub async fn call_with(&self, task: &str, args: &Value, options: &Value) -> anyhow::Result<Value> {
        let body = if options.is_null() {
            json!({"task": task, "args": args})
        } else {
            json!({"task": task, "args": args, "options": options})
        };
        let req = self.http.post(format!("{}/v1/invocations", self.base)).json(&body);
        self.read("call", req.send().await).await
    }

    /// Routes many calls in one request.
    pub async fn call_batch(&self, calls: &[Value]) -> anyhow::Result<Value> {
        let req = self.http.post(format!("{}/v1/invocations/batch", self.base)).json(&json!({ "calls": calls }));
        self.read("batch call", req.send().await).await
    }

    /// Opens the event stream with the filters of `query`, resuming after `last_event_id`.
    pub async fn events(&self, query: &[(&str, String)], last_event_id: Option<i64>) -> anyhow::Result<SseReader> {
        let path = "/v1/events/stream";
        let mut req = self.http.get(format!("{}{path}", self.base)).query(query);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        match req.send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => Ok(SseReader { resp: r, buf: String::new() }),
            other => {
                // Not a stream: the answer's error, or a daemon that does not stream.
                self.read("event stream", other).await?;
                Err(Failure::new(exit::UNREACHABLE, "the daemon did not open the event stream").into())
            }
        }
    }

    /// Long-polls until the invocation is final or `timeout` passes; returns it as it is then.
    pub async fn result(&self, id: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let wait_ms = left.as_millis().min(30_000) as u64;
            let path = format!("/v1/invocations/{id}/result");
            let resp = self.http.get(format!("{}{path}", self.base)).query(&[("timeout_ms", wait_ms)]).send().await;
            let done = resp.as_ref().is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
            let body = self.read(&path, resp).await?;
            if done || left.is_zero() {
                return Ok(body);
            }
        }
    }
}

/// One Server-Sent Event of `GET /v1/events/stream`.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// `status`, `lagged`, …
    pub event: String,
    /// The `id:` (history sequence), if any.
    pub id: Option<i64>,
    /// The `data:` as JSON (a string if it is not JSON).
    pub data: Value,
}

/// Reads events off an open stream as they arrive.
pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    /// The next event; `None` when the stream ends. Comments (keep-alives) are skipped.
    pub async fn next(&mut self) -> anyhow::Result<Option<SseEvent>> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse::<i64>().ok();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        any = true;
                    }
                }
                if !any {
                    continue;
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Ok(Some(SseEvent { event, id, data }));
            }
            match self.resp.chunk().await? {
                Some(bytes) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                None => return Ok(None),
            }
        }
    }
}

/// The daemon's base URL as given, with `http://` when it names only `host:port`, and no
/// trailing slash.
fn normalize(base: &str) -> String {
    let base = base.trim().trim_end_matches('/');
    if base.contains("://") { base.to_string() } else { format!("http://{base}") }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bare_host_and_port_is_http() {
        assert_eq!(super::normalize("127.0.0.1:7700"), "http://127.0.0.1:7700");
        assert_eq!(super::normalize("localhost:7700/"), "http://localhost:7700");
        assert_eq!(super::normalize("https://w.example:443/"), "https://w.example:443");
    }
}
