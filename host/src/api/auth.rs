//! API keys over HTTP: the middleware that asks every route for a key of the right role, the
//! node's cache of the stored keys, and `/v1/keys`.
//!
//! Keys are off until one exists: a bootstrap key from the configuration (`--admin-key`, kept
//! in memory only) or any key in the store. Then every route but `/health/live`,
//! `/health/ready` and `/openapi.json` (and `/metrics` with `--metrics-public`) needs `Authorization: Bearer KEY`
//! of a role at least [`required_role`]'s: 401 without a known key, 403 with too low a role.
//!
//! Each node keeps the stored keys (name, role, SHA-256) in memory and reads them again when
//! its membership tick sees their version move ([`Auth::run`]; every write to the keys bumps
//! it), so a key deleted on one node stops working on every node within one heartbeat
//! interval (at once on the node that deleted it), and an idle node does not read them. An unknown key makes the
//! node read the keys again before it answers 401 (at most every [`MISS_REFRESH`], so a flood
//! of bad keys costs a few reads a second), so a key created on another node works there
//! within that time, before the node's next tick.
//! Use is recorded in batches: the names used since the last tick are stamped in one statement
//! per interval, never a write per request. Failures are logged with the route and the key's
//! name or "unknown key", never the key.
//!
//! [`Auth`] holds the one narrow handle of the API on the database: the key table
//! ([`KeyStore`], given by `server.rs`). The `/v1/keys` handlers go through its methods.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::json::Json;
use super::{ApiError, AppState};
use crate::model::Millis;
use crate::model::key::{self as keys, KeyDigest, Role};
use crate::store::{ApiKey, KeyStore, StoreResult};

/// Shortest gap between two reads of the keys caused by unknown keys.
pub const MISS_REFRESH: Duration = Duration::from_millis(250);

/// The keys are read again at least this often, even when their version did not move.
const KEYS_BACKSTOP: Duration = Duration::from_secs(60);

/// Name under which the bootstrap key appears in logs.
const BOOTSTRAP_NAME: &str = "bootstrap";

/// A key this node knows.
struct Known {
    name: String,
    role: Role,
    digest: KeyDigest,
}

struct Inner {
    store: Arc<dyn KeyStore>,
    bootstrap: Option<KeyDigest>,
    stored: RwLock<Arc<Vec<Known>>>,
    used: Mutex<HashSet<String>>,
    /// When the keys were last read; a lock so that concurrent misses read them once.
    refreshed: tokio::sync::Mutex<Instant>,
    interval: Duration,
}

/// The node's keys: who may do what.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

impl Auth {
    /// Keys of `store`, plus the bootstrap admin key if given, read again every `interval`.
    /// Call [`Auth::refresh`] once before serving.
    pub fn new(store: Arc<dyn KeyStore>, bootstrap: Option<&str>, interval: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                bootstrap: bootstrap.map(keys::digest),
                stored: RwLock::new(Arc::new(Vec::new())),
                used: Mutex::new(HashSet::new()),
                refreshed: tokio::sync::Mutex::new(Instant::now()),
                interval,
            }),
        }
    }

    /// Whether keys are in force (a bootstrap key or any stored key).
    pub fn enabled(&self) -> bool {
        self.inner.bootstrap.is_some() || !self.snapshot().is_empty()
    }

    fn snapshot(&self) -> Arc<Vec<Known>> {
        match self.inner.stored.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Reads the stored keys again.
    pub async fn refresh(&self) -> StoreResult<()> {
        let mut at = self.inner.refreshed.lock().await;
        self.load().await?;
        *at = Instant::now();
        Ok(())
    }

    async fn load(&self) -> StoreResult<()> {
        let rows = self.inner.store.key_list().await?;
        let known: Vec<Known> = rows
            .into_iter()
            .filter_map(|k| match keys::parse_digest(&k.hash) {
                Some(digest) => Some(Known { name: k.name, role: k.role, digest }),
                None => {
                    tracing::error!(key = %k.name, "stored API key has a malformed hash; it is ignored");
                    None
                }
            })
            .collect();
        match self.inner.stored.write() {
            Ok(mut g) => *g = Arc::new(known),
            Err(p) => *p.into_inner() = Arc::new(known),
        }
        Ok(())
    }

    /// Stamps the keys used since the last call (one statement).
    async fn flush_used(&self) {
        let names: Vec<String> = match self.inner.used.lock() {
            Ok(mut g) => g.drain().collect(),
            Err(p) => p.into_inner().drain().collect(),
        };
        if let Err(e) = self.inner.store.key_touch(&names).await {
            tracing::warn!(error = %e, "could not record the use of API keys");
        }
    }

    /// Until `stop`: reads the keys again whenever `version` moves (every membership tick
    /// publishes the version of the keys it read, so a key created or deleted on any node is
    /// in force here within one heartbeat), and at least every [`KEYS_BACKSTOP`]; records
    /// their use every interval.
    pub async fn run(self, stop: CancellationToken, mut version: tokio::sync::watch::Receiver<i64>) {
        let mut tick = tokio::time::interval(self.inner.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut publishing = true;
        loop {
            let moved = tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => false,
                r = version.changed(), if publishing => {
                    // The membership loop ended (shutdown): the backstop alone from here on.
                    publishing = r.is_ok();
                    publishing
                }
            };
            // (The lock on the time of the last read is let go before `refresh` takes it.)
            let due = moved || self.inner.refreshed.lock().await.elapsed() >= KEYS_BACKSTOP;
            if due && let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "could not read the API keys; keeping the ones known");
            }
            if !moved {
                self.flush_used().await;
            }
        }
        self.flush_used().await;
    }

    /// The key with this digest: compared in constant time with every known digest (the
    /// bootstrap one and all stored ones, no early exit).
    fn find(&self, digest: &KeyDigest) -> Option<(String, Role)> {
        let mut found = None;
        if let Some(b) = &self.inner.bootstrap
            && keys::digest_eq(b, digest)
        {
            found = Some((BOOTSTRAP_NAME.to_string(), Role::Admin));
        }
        for k in self.snapshot().iter() {
            if keys::digest_eq(&k.digest, digest) && found.is_none() {
                found = Some((k.name.clone(), k.role));
            }
        }
        found
    }

    /// The name and role of a presented key; an unknown one makes the node read the keys
    /// again (at most every [`MISS_REFRESH`]) before it says no.
    async fn check(&self, key: &str) -> Option<(String, Role)> {
        let digest = keys::digest(key);
        if let Some(found) = self.find(&digest) {
            return Some(found);
        }
        {
            let mut at = self.inner.refreshed.lock().await;
            if at.elapsed() >= MISS_REFRESH {
                if let Err(e) = self.load().await {
                    tracing::warn!(error = %e, "could not read the API keys");
                }
                *at = Instant::now();
            }
        }
        self.find(&digest)
    }

    /// Creates a key of `role` named `name` (a valid name) and returns it with its secret (the only time the
    /// secret exists outside the caller; the store keeps its SHA-256). This node knows it at once.
    async fn create(&self, name: &str, role: Role) -> Result<(ApiKey, String), ApiError> {
        let key = keys::generate();
        let stored = self.inner.store.key_insert(name, role, &keys::digest_hex(&key)).await?;
        self.refresh().await?;
        tracing::info!(key = %stored.name, %role, "API key created");
        Ok((stored, key))
    }

    /// Every stored key (name, role, times; the hash stays here).
    async fn list(&self) -> StoreResult<Vec<ApiKey>> {
        self.inner.store.key_list().await
    }

    /// Deletes a key; this node stops accepting it at once. `NotFound` without such a key.
    async fn delete(&self, name: &str) -> Result<(), ApiError> {
        if !self.inner.store.key_delete(name).await? {
            return Err(ApiError::not_found(format!("no API key named `{name}`")));
        }
        self.refresh().await?;
        tracing::info!(key = %name, "API key deleted");
        Ok(())
    }

    fn mark_used(&self, name: &str) {
        if name == BOOTSTRAP_NAME {
            return;
        }
        let mut g = match self.inner.used.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !g.contains(name) {
            g.insert(name.to_string());
        }
    }
}

/// The role a request needs, `None` if it is open to anyone. Reads (and the batch await) need `read`; routing,
/// batches, cancel, rerun, events, workflows and arrays need `write`; components, task options,
/// pins, triggers, keys and anything else need `admin`.
pub fn required_role(method: &Method, path: &str, metrics_public: bool) -> Option<Role> {
    if path == "/health/live" || path == "/health/ready" || path == "/openapi.json" {
        return None;
    }
    // The dashboard's page and assets hold no data; the page asks for a key when the API
    // answers 401.
    if path == "/ui" || path.starts_with("/ui/") {
        return None;
    }
    if path == "/metrics" {
        return (!metrics_public).then_some(Role::Read);
    }
    if path == "/v1/keys" || path.starts_with("/v1/keys/") {
        return Some(Role::Admin);
    }
    // The batch await only reads (it is a POST for its long list of ids).
    if method == Method::GET || method == Method::HEAD || path == "/v1/invocations/results" {
        return Some(Role::Read);
    }
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    let write = ["/v1/invocations", "/v1/events", "/v1/workflows", "/v1/arrays"];
    if write.iter().any(|p| under(p)) { Some(Role::Write) } else { Some(Role::Admin) }
}

fn unauthorized(message: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The middleware: lets a request through if keys are off, the route is open, or it carries
/// a known key of a high enough role.
pub(super) async fn require_key(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(needed) = required_role(req.method(), req.uri().path(), s.guard.metrics_public) else {
        return next.run(req).await;
    };
    if !s.auth.enabled() {
        return next.run(req).await;
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let Some(presented) = presented else {
        tracing::warn!(%method, %path, "rejected a request without an API key");
        return unauthorized("this route needs an API key: send `Authorization: Bearer KEY`");
    };
    let Some((name, role)) = s.auth.check(presented).await else {
        tracing::warn!(%method, %path, "rejected a request with an unknown API key");
        return unauthorized("unknown API key");
    };
    s.auth.mark_used(&name);
    if role < needed {
        tracing::warn!(%method, %path, key = %name, %role, %needed, "rejected a request: role too low");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("key `{name}` has role `{role}`; {method} {path} needs `{needed}`"),
        )
        .into_response();
    }
    req.extensions_mut().insert(Caller { name, role });
    next.run(req).await
}

/// The key a request was let in with (set by [`require_key`] when keys are on).
#[derive(Clone)]
pub(super) struct Caller {
    name: String,
    role: Role,
}

/// Who the caller is, as `GET /v1/whoami` answers.
#[derive(Serialize, ToSchema)]
pub(super) struct WhoAmI {
    /// Whether keys are in force; without them anyone may do anything.
    keys_enabled: bool,
    /// The key's name (`bootstrap` for the configured admin key); `null` when keys are off.
    name: Option<String>,
    /// What the caller may do.
    role: Role,
}

/// Who am I
///
/// `{"keys_enabled","name","role"}`: the presented key's name and role, so a client (the
/// dashboard) can offer only what the key allows. Any key may ask.
#[utoipa::path(
    get, path = "/v1/whoami", tag = "keys",
    responses((status = 200, description = "The caller's key and role.", body = WhoAmI))
)]
pub(super) async fn whoami(State(s): State<AppState>, caller: Option<axum::Extension<Caller>>) -> Json<WhoAmI> {
    match caller {
        Some(axum::Extension(c)) => Json(WhoAmI { keys_enabled: true, name: Some(c.name), role: c.role }),
        None => Json(WhoAmI { keys_enabled: s.auth.enabled(), name: None, role: Role::Admin }),
    }
}

/// A key to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    /// Its name (letters, digits, `-`, `_`, `.`).
    name: String,
    /// `read`, `write` or `admin`.
    role: String,
}

/// A key just created, with its secret.
#[derive(Serialize, ToSchema)]
pub(super) struct CreatedKey {
    name: String,
    role: Role,
    key: String,
}

/// Create an API key
///
/// Answers the key with its secret: the only time the secret is shown; the store keeps its
/// SHA-256.
#[utoipa::path(
    post, path = "/v1/keys", tag = "keys", request_body = NewKey,
    responses(
        (status = 201, description = "Created, with its secret.", body = CreatedKey),
        (status = 400, description = "A bad name or role.", body = ErrorBody),
        (status = 409, description = "A key of that name exists.", body = ErrorBody),
        (status = 415, description = "Not `application/json`.", body = ErrorBody),
    )
)]
pub(super) async fn create(State(s): State<AppState>, Json(body): Json<NewKey>) -> Result<impl IntoResponse, ApiError> {
    keys::validate_name(&body.name).map_err(ApiError::bad_request)?;
    let role: Role = body.role.parse().map_err(ApiError::bad_request)?;
    let (stored, key) = s.auth.create(&body.name, role).await?;
    Ok((StatusCode::CREATED, Json(CreatedKey { name: stored.name, role: stored.role, key })))
}

/// A stored key as listed: never a secret or a hash.
#[derive(Serialize, ToSchema)]
pub(super) struct KeyView {
    name: String,
    role: Role,
    created_at: Millis,
    last_used_at: Option<Millis>,
}

/// The stored keys, and whether this node also has a key from its configuration.
#[derive(Serialize, ToSchema)]
pub(super) struct KeyList {
    keys: Vec<KeyView>,
    bootstrap_key: bool,
}

/// List API keys
///
/// Name, role, creation and last use of every stored key; never a secret or a hash.
/// `bootstrap_key` says whether this node also has a key from its configuration.
#[utoipa::path(
    get, path = "/v1/keys", tag = "keys",
    responses((status = 200, description = "The keys.", body = KeyList))
)]
pub(super) async fn list(State(s): State<AppState>) -> Result<Json<KeyList>, ApiError> {
    let keys = s
        .auth
        .list()
        .await?
        .into_iter()
        .map(|k| KeyView { name: k.name, role: k.role, created_at: k.created_at, last_used_at: k.last_used_at })
        .collect();
    Ok(Json(KeyList { keys, bootstrap_key: s.auth.inner.bootstrap.is_some() }))
}

/// Delete an API key
///
/// Every node stops accepting it within one heartbeat interval (this one at once).
#[utoipa::path(
    delete, path = "/v1/keys/{name}", tag = "keys",
    params(("name" = String, Path, description = "Key name.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such key.", body = ErrorBody),
    )
)]
pub(super) async fn delete(State(s): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    s.auth.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_per_route() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(required_role(&get, "/health/live", false), None);
        assert_eq!(required_role(&get, "/health/ready", false), None);
        assert_eq!(required_role(&get, "/openapi.json", false), None);
        assert_eq!(required_role(&get, "/metrics", false), Some(Role::Read));
        assert_eq!(required_role(&get, "/metrics", true), None);
        assert_eq!(required_role(&get, "/ui", false), None);
        assert_eq!(required_role(&get, "/ui/invocations/x", false), None);
        assert_eq!(required_role(&get, "/uix", false), Some(Role::Read));
        assert_eq!(required_role(&get, "/v1/whoami", false), Some(Role::Read));
        assert_eq!(required_role(&get, "/v1/invocations", false), Some(Role::Read));
        assert_eq!(required_role(&get, "/v1/keys", false), Some(Role::Admin));
        assert_eq!(required_role(&post, "/v1/invocations", false), Some(Role::Write));
        assert_eq!(required_role(&post, "/v1/invocations/batch", false), Some(Role::Write));
        assert_eq!(required_role(&post, "/v1/invocations/results", false), Some(Role::Read));
        assert_eq!(required_role(&get, "/v1/events/stream", false), Some(Role::Read));
        assert_eq!(required_role(&post, "/v1/invocations/x/cancel", false), Some(Role::Write));
        assert_eq!(required_role(&post, "/v1/events", false), Some(Role::Write));
        assert_eq!(required_role(&post, "/v1/workflows/w/pause", false), Some(Role::Write));
        assert_eq!(required_role(&post, "/v1/arrays", false), Some(Role::Write));
        assert_eq!(required_role(&post, "/v1/components", false), Some(Role::Admin));
        assert_eq!(required_role(&Method::PATCH, "/v1/tasks/t", false), Some(Role::Admin));
        assert_eq!(required_role(&post, "/v1/cluster/pins", false), Some(Role::Admin));
        assert_eq!(required_role(&post, "/v1/triggers", false), Some(Role::Admin));
        assert_eq!(required_role(&Method::DELETE, "/v1/keys/ci", false), Some(Role::Admin));
        // A path merely starting like a write route is not one.
        assert_eq!(required_role(&post, "/v1/invocationsx", false), Some(Role::Admin));
    }
}
