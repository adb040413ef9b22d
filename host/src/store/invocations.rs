//! Invocations for [`SqlStore`]: routing (the insert of new calls with their `registered`
//! history), claims (with their `pending` history, `queued` instances and the first record of
//! calls held back by running concurrency), reads (and why a call waits) and the purge.
//! Transitions and recovery are in `transitions.rs`. A child of `engine.rs` (it shares its
//! transaction macros); the SQL is in `sql_invocations.rs`.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::{
    Conn, Dialect, NameRow, Pools, Retry, SqlStore, check_fence, check_json, conflict_on_unique, corrupt, one_trip,
    parse_status, pg_statement, sql, stored_failure, to_json, to_u32, tx_marker,
};
use crate::model::{Claimed, HistoryEntry, Invocation, InvocationFilter, InvocationStatus, NewInvocation, Waiting};
use crate::store::write_gate::Lane;
use crate::store::{ClaimFilter, Fence, RateClaim, StatusCount, Store, StoreError, StoreResult};

use sql::invocations as q;

/// What a node claims ([`claim`]).
pub(super) struct Claim<'a> {
    /// The claiming node: the new owner.
    pub node: &'a str,
    /// At most this many invocations.
    pub limit: u32,
    /// How long each claimed attempt may wait for its node's first heartbeat (ms).
    pub report_window_ms: i64,
    /// Pins and tokens: what the node may claim.
    pub filter: &'a ClaimFilter,
}

#[derive(sqlx::FromRow)]
pub(in crate::store) struct InvocationRow {
    id: String,
    task: String,
    call_id: String,
    args: String,
    status: String,
    owner_node: Option<String>,
    attempts: i64,
    result: Option<String>,
    error_kind: Option<String>,
    error_message: Option<String>,
    parent: Option<String>,
    reg_scope: Option<String>,
    idempotency_key: Option<String>,
    workflow: Option<String>,
    max_attempts: Option<i64>,
    created_at: i64,
    updated_at: i64,
    available_at: i64,
    trace_parent: Option<String>,
    priority: i64,
    component_version: Option<i64>,
}

/// A claimed invocation as the claim returns it.
#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: String,
    task: String,
    args: String,
    attempts: i64,
    unstarted: i64,
    parent: Option<String>,
    workflow: Option<String>,
    max_attempts: Option<i64>,
    trace_parent: Option<String>,
    priority: i64,
    component_version: Option<i64>,
}

#[derive(sqlx::FromRow)]
pub(super) struct CountRow {
    pub(super) task: String,
    pub(super) status: String,
    pub(super) count: i64,
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    status: String,
    node: Option<String>,
    attempt: i64,
    at: i64,
}

// ---------------------------------------------------------------------------------------------
// JSON batch parameters.

#[derive(Serialize)]
struct InsertJson<'a> {
    id: &'a str,
    task: &'a str,
    call_id: &'a str,
    args: &'a str,
    parent: Option<&'a str>,
    scope: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    run_scope: Option<&'a str>,
    workflow: Option<&'a str>,
    max_attempts: Option<u32>,
    token: Option<u32>,
    delay_ms: Option<u64>,
    not_before: Option<i64>,
    trace_parent: Option<&'a str>,
    priority: u8,
}

/// The JSON parameter of an insert of new invocations (`invocation_insert!` in `sql.rs`).
pub(super) fn insert_json(calls: &[NewInvocation]) -> StoreResult<String> {
    for c in calls {
        check_json("args", &c.id, &c.args)?;
    }
    to_json(
        &calls
            .iter()
            .map(|c| InsertJson {
                id: &c.id,
                task: &c.task,
                call_id: &c.call_id,
                args: &c.args,
                parent: c.parent.as_deref(),
                scope: c.scope.as_deref(),
                idempotency_key: c.idempotency_key.as_deref(),
                run_scope: c.run_scope.as_deref(),
                workflow: c.workflow.as_deref(),
                max_attempts: c.max_attempts,
                token: c.token,
                delay_ms: c.delay_ms,
                not_before: c.not_before,
                trace_parent: c.trace_parent.as_deref(),
                priority: c.priority,
            })
            .collect::<Vec<_>>(),
    )
}

#[derive(Serialize)]
pub(super) struct HistoryJson<'a> {
    pub(super) id: &'a str,
    pub(super) status: &'static str,
    pub(super) node: Option<&'a str>,
    pub(super) attempt: i64,
    pub(super) at: i64,
}
impl InvocationRow {
    fn decode(self) -> StoreResult<Invocation> {
        let error = stored_failure(self.error_kind, self.error_message)?;
        let status = parse_status(&self.status)?;
        let priority =
            u8::try_from(self.priority).map_err(|e| corrupt(&format!("priority of invocation `{}`", self.id), e))?;
        Ok(Invocation {
            priority,
            not_before: (status.is_runnable() && self.available_at > self.updated_at).then_some(self.available_at),
            args: serde_json::from_str(&self.args)
                .map_err(|e| corrupt(&format!("args of invocation `{}`", self.id), e))?,
            result: match &self.result {
                Some(r) => Some(
                    serde_json::from_str(r).map_err(|e| corrupt(&format!("result of invocation `{}`", self.id), e))?,
                ),
                None => None,
            },
            status,
            attempts: to_u32("attempts", self.attempts)?,
            error,
            id: self.id,
            task: self.task,
            call_id: self.call_id,
            owner: self.owner_node,
            parent: self.parent,
            scope: self.reg_scope,
            idempotency_key: self.idempotency_key,
            workflow: self.workflow,
            max_attempts: self.max_attempts.map(|m| to_u32("max_attempts", m)).transpose()?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            traceparent: self.trace_parent,
            component_version: self.component_version.and_then(|v| u64::try_from(v).ok()),
        })
    }
}

fn decode_invocations(rows: Vec<InvocationRow>) -> StoreResult<Vec<Invocation>> {
    rows.into_iter().map(InvocationRow::decode).collect()
}

impl SqlStore {
    /// The invocations of `calls` if every one of them is stored already with its call: a
    /// routing transaction retried after its commit was cut off meets its own rows (ids are
    /// fresh per routing, so a stored id with the same call is this routing's).
    async fn inserted_before(&self, calls: &[NewInvocation]) -> StoreResult<Option<Vec<Invocation>>> {
        let ids: Vec<String> = calls.iter().map(|c| c.id.clone()).collect();
        let stored: HashMap<String, Invocation> =
            self.invocation_get_many(&ids).await?.into_iter().map(|inv| (inv.id.clone(), inv)).collect();
        let mut out = Vec::with_capacity(calls.len());
        for c in calls {
            match stored.get(&c.id) {
                Some(inv) if inv.call_id == c.call_id => out.push(inv.clone()),
                _ => return Ok(None),
            }
        }
        Ok(Some(out))
    }
}

/// The conflict of an insert whose ids exist.
const DUPLICATE_INVOCATION: &str = "an invocation id of the batch already exists";

/// The error of an insert that calls an unknown task (`None`: it vanished again meanwhile).
/// Why a routing of the calls in `json` failed its NOT NULL task column: the first call of a
/// task that does not exist, as [`unknown_task`] (or the error of looking it up).
async fn first_unknown_task(store: &SqlStore, json: &str) -> StoreError {
    let missing: Result<Option<NameRow>, sqlx::Error> = on_read!(store, |db, d| {
        sqlx::query_as(q::INVOCATION_INSERT_UNKNOWN_TASK.get(d)).bind(json).fetch_optional(db).await
    });
    match missing {
        Ok(missing) => unknown_task(missing.as_ref().map(|r| r.name.as_str())),
        Err(e) => StoreError::Database(e),
    }
}

fn unknown_task(task: Option<&str>) -> StoreError {
    StoreError::NotFound(format!("task `{}`", task.unwrap_or_default()))
}

/// Inserts `calls` as `registered` invocations inside a transaction, with their `registered`
/// history, and returns the inserted rows. A call of an unknown task fails it (`NotFound`,
/// naming the task), a taken id or unique key too (`Conflict`); the caller's `?` rolls the
/// transaction back. The workflow step uses it on both databases; routing is one trip on both
/// (`INVOCATION_INSERT_ONE_TRIP`, `INVOCATION_ROUTE_ONE_STATEMENT`).
pub(in crate::store) async fn insert_registered(
    conn: impl Into<Conn<'_>>,
    calls: &[NewInvocation],
) -> StoreResult<Vec<InvocationRow>> {
    let json = insert_json(calls)?;
    on_conn!(conn.into(), |c, d| {
        let rows: Vec<InvocationRow> = sqlx::query_as(q::INVOCATION_INSERT.get(d))
            .bind(&json)
            .fetch_all(&mut *c)
            .await
            .map_err(conflict_on_unique(DUPLICATE_INVOCATION))?;
        if rows.len() != calls.len() {
            let known: HashSet<&str> = rows.iter().map(|r| r.task.as_str()).collect();
            return Err(unknown_task(calls.iter().map(|c| c.task.as_str()).find(|t| !known.contains(t))));
        }
        let history: Vec<HistoryJson<'_>> = rows
            .iter()
            .map(|r| HistoryJson {
                id: &r.id,
                status: InvocationStatus::Registered.as_str(),
                node: None,
                attempt: r.attempts,
                at: r.created_at,
            })
            .collect();
        insert_history(c, &history).await?;
        Ok(rows)
    })
}

/// Appends `rows` to the history in their order (so `seq` follows it), ONE statement: every
/// history row written statement by statement (transitions on PostgreSQL, the workflow step)
/// goes through here. Routing and claims write theirs inside their own statement or script.
pub(super) async fn insert_history(conn: impl Into<Conn<'_>>, rows: &[HistoryJson<'_>]) -> StoreResult<()> {
    let json = to_json(rows)?;
    on_conn!(conn.into(), |c, d| {
        sqlx::query(q::HISTORY_INSERT.get(d)).bind(&json).execute(&mut *c).await?;
    });
    Ok(())
}

/// Routes new calls ([`Store::invocation_insert_batch`]).
pub(super) async fn insert_batch(store: &SqlStore, calls: &[NewInvocation]) -> StoreResult<Vec<Invocation>> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let json = insert_json(calls)?;
    let rows: Vec<InvocationRow> = match &store.pools {
        Pools::Sqlite { writer, .. } => {
            // A client waits for this answer: the urgent lane (see `write_gate.rs`).
            match one_trip(
                writer,
                Lane::Urgent,
                "route",
                sqlx::query_as(q::INVOCATION_INSERT_ONE_TRIP).bind(json.as_str()),
            )
            .await
            {
                Ok(rows) => rows,
                // The script's insert fails on a call of an unknown task (see `sql_invocations.rs`).
                Err(sqlx::Error::Database(e)) if e.kind() == sqlx::error::ErrorKind::NotNullViolation => {
                    return Err(first_unknown_task(store, &json).await);
                }
                Err(e) => return Err(conflict_on_unique(DUPLICATE_INVOCATION)(e)),
            }
        }
        Pools::Postgres(pool) => {
            let mut retry = Retry::new();
            loop {
                match sqlx::query_as(q::INVOCATION_ROUTE_ONE_STATEMENT).bind(json.as_str()).fetch_all(pool).await {
                    Ok(rows) => break rows,
                    Err(sqlx::Error::Database(e)) if e.kind() == sqlx::error::ErrorKind::NotNullViolation => {
                        return Err(first_unknown_task(store, &json).await);
                    }
                    Err(e) => {
                        let e = conflict_on_unique(DUPLICATE_INVOCATION)(e);
                        if retry.again(&e, "route").await {
                            continue;
                        }
                        // A try whose answer was lost may have stored the calls: then they are
                        // the answer.
                        if matches!(e, StoreError::Conflict(_)) && retry.ambiguous() {
                            return store.inserted_before(calls).await?.ok_or(e);
                        }
                        return Err(e);
                    }
                }
            }
        }
    };
    // Input order.
    let position: HashMap<&str, usize> = calls.iter().enumerate().map(|(i, c)| (c.id.as_str(), i)).collect();
    let mut out = decode_invocations(rows)?;
    out.sort_by_key(|inv| position.get(inv.id.as_str()).copied().unwrap_or(usize::MAX));
    Ok(out)
}

/// Claims runnable invocations for a node ([`Store::invocation_claim_reporting`]).
pub(super) async fn claim(store: &SqlStore, claim: &Claim<'_>) -> StoreResult<Vec<Claimed>> {
    let Claim { node, limit, report_window_ms, filter } = *claim;
    if limit == 0 {
        return Ok(Vec::new());
    }
    // An attempt runs only once its claim is durable: a claim lost to a crash of the database
    // server (PostgreSQL, while this node lives on) would hand the same attempt number to a
    // second runner, so two runs, one history. SQLite's relaxed commit is lost only with the
    // machine, and this node with it, so its claim stays relaxed.
    let aging_ms = filter.aging_ms.unwrap_or(crate::store::PRIORITY_AGING_MS);
    let mut rows: Vec<ClaimedRow> = match &store.pools {
        Pools::Sqlite { writer, .. } => {
            let (excluded, pinned_here) = (to_json(&filter.excluded)?, to_json(&filter.pinned_here)?);
            let script = sqlx::query_as(q::INVOCATION_CLAIM_ONE_TRIP)
                .bind(node)
                .bind(i64::from(limit))
                .bind(tx_marker())
                .bind(report_window_ms)
                .bind(&excluded)
                .bind(&pinned_here)
                .bind(aging_ms);
            one_trip(writer, Lane::Background, "claim", script).await?
        }
        Pools::Postgres(pool) => {
            let (excluded, pinned_here) = (to_json(&filter.excluded)?, to_json(&filter.pinned_here)?);
            pg_statement("invocation claim", &mut false, || {
                sqlx::query_as(q::INVOCATION_CLAIM_POSTGRES)
                    .bind(node)
                    .bind(i64::from(limit))
                    .bind(&excluded)
                    .bind(&pinned_here)
                    .bind(report_window_ms)
                    .bind(aging_ms)
                    .fetch_all(pool)
            })
            .await?
        }
    };
    // Started in the order they were chosen: higher priorities first, oldest first within one.
    rows.sort_unstable_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));
    decode_claimed(rows)
}

/// What the claimed rows tell a worker.
fn decode_claimed(rows: Vec<ClaimedRow>) -> StoreResult<Vec<Claimed>> {
    rows.into_iter()
        .map(|r| {
            Ok(Claimed {
                priority: u8::try_from(r.priority).unwrap_or(crate::model::DEFAULT_PRIORITY),
                component_version: r.component_version.and_then(|v| u64::try_from(v).ok()),
                attempt: to_u32("attempts", r.attempts)?,
                unstarted: to_u32("unstarted", r.unstarted)?,
                id: r.id,
                task: r.task,
                args: r.args,
                parent: r.parent,
                workflow: r.workflow,
                max_attempts: r.max_attempts.map(|m| to_u32("max_attempts", m)).transpose()?,
                trace_parent: r.trace_parent,
            })
        })
        .collect()
}

/// A candidate of a claim of rate-limited calls ([`q::RATE_CLAIM_CANDIDATES`]).
#[derive(sqlx::FromRow)]
struct RateCandidate {
    id: String,
    run_scope: Option<String>,
    args: String,
    rate_limit: String,
}

/// What started in the current window of one limit and key ([`rq::USAGE_CURRENT`]).
#[derive(sqlx::FromRow)]
struct UsageRow {
    name: String,
    rkey: String,
    used: i64,
}

/// Starts to add to a window ([`rq::USAGE_ADD`]).
#[derive(Serialize)]
struct UsageJson<'a> {
    name: &'a str,
    key: &'a str,
    start: i64,
    end: i64,
    n: i64,
}

/// How many candidates a claim of rate-limited calls reads per call it may take, at least:
/// calls of used-up keys are passed over, so it looks further than the free slots.
const RATE_CANDIDATES_MIN: u32 = 32;

/// Claims runnable calls of rate-limited tasks for a node ([`Store::invocation_claim_rate_limited`]):
/// one transaction that locks the limits unpaused tasks name (by name: on PostgreSQL a claim of
/// the same limits on another node waits), reads the oldest candidates (as the ordinary claim
/// does, on the node's tokens and pins, a free running scope, `SKIP LOCKED`), counts what
/// started in each limit's current window per key, and claims candidates in id order while
/// their key has starts left, as the ordinary claim does (`pending`, its history and a `queued`
/// instance, at the time the windows were read), adding them to the usage. A candidate of a
/// task whose limit is gone is claimed unlimited. Durable on both databases.
pub(super) async fn claim_rate_limited(store: &SqlStore, claim: &Claim<'_>) -> StoreResult<RateClaim> {
    use crate::model::rate_limit::{KeyPath, window};
    use sql::rate_limits as rq;
    let Claim { node, limit, report_window_ms, filter } = *claim;
    if limit == 0 {
        return Ok(RateClaim::default());
    }
    let (excluded, pinned_here) = (to_json(&filter.excluded)?, to_json(&filter.pinned_here)?);
    let (rows, held_for_ms) = in_tx!(store, |tx, d| {
        let limits: Vec<LimitNow> = sqlx::query_as(rq::LIMITS_IN_USE_LOCKED.get(d)).fetch_all(&mut *tx).await?;
        let now = match limits.first() {
            Some(l) => l.now,
            None => sqlx::query_as::<_, (i64,)>(sql::NOW.get(d)).fetch_one(&mut *tx).await?.0,
        };
        let names: Vec<&str> = limits.iter().map(|l| l.name.as_str()).collect();
        let names = to_json(&names)?;
        sqlx::query(rq::USAGE_DROP_PAST.get(d)).bind(&names).bind(now).execute(&mut *tx).await?;
        let candidates: Vec<RateCandidate> = sqlx::query_as(q::RATE_CLAIM_CANDIDATES.get(d))
            .bind(node)
            .bind(i64::from(limit.max(RATE_CANDIDATES_MIN)))
            .bind(&excluded)
            .bind(&pinned_here)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
        if candidates.is_empty() {
            return Ok((Vec::new(), None));
        }
        let usage: Vec<UsageRow> =
            sqlx::query_as(rq::USAGE_CURRENT.get(d)).bind(&names).bind(now).fetch_all(&mut *tx).await?;
        let used: HashMap<(String, String), i64> = usage.into_iter().map(|u| ((u.name, u.rkey), u.used)).collect();
        let by_name: HashMap<&str, &LimitNow> = limits.iter().map(|l| (l.name.as_str(), l)).collect();
        let paths: HashMap<&str, Option<KeyPath>> = limits
            .iter()
            .map(|l| (l.name.as_str(), l.key_path.as_deref().and_then(|p| KeyPath::parse(p).ok())))
            .collect();
        let mut ids: Vec<&str> = Vec::new();
        let mut added: std::collections::BTreeMap<(String, String), i64> = std::collections::BTreeMap::new();
        let mut scopes: HashSet<&str> = HashSet::new();
        let mut held_until: Option<i64> = None;
        for c in &candidates {
            if ids.len() >= limit as usize {
                break;
            }
            if c.run_scope.as_deref().is_some_and(|s| !scopes.insert(s)) {
                continue;
            }
            let Some(l) = by_name.get(c.rate_limit.as_str()) else {
                ids.push(&c.id);
                continue;
            };
            let key = match paths.get(l.name.as_str()).and_then(Option::as_ref) {
                Some(path) => serde_json::from_str::<serde_json::Value>(&c.args)
                    .ok()
                    .and_then(|args| path.key_of(&args))
                    .unwrap_or_default(),
                None => String::new(),
            };
            let slot = (l.name.clone(), key);
            let so_far = used.get(&slot).copied().unwrap_or(0) + added.get(&slot).copied().unwrap_or(0);
            if so_far >= l.limit_n {
                let end = window(now, u64::try_from(l.per_ms).unwrap_or(1)).1;
                held_until = Some(held_until.map_or(end, |h| h.min(end)));
                if let Some(s) = c.run_scope.as_deref() {
                    scopes.remove(s);
                }
                continue;
            }
            *added.entry(slot).or_default() += 1;
            ids.push(&c.id);
        }
        let held_for_ms = held_until.map(|end| end - now);
        if ids.is_empty() {
            return Ok((Vec::new(), held_for_ms));
        }
        let ids = to_json(&ids)?;
        let rows: Vec<ClaimedRow> = match d {
            Dialect::Postgres => {
                sqlx::query_as(q::CLAIM_IDS_POSTGRES)
                    .bind(node)
                    .bind(&ids)
                    .bind(now)
                    .bind(report_window_ms)
                    .fetch_all(&mut *tx)
                    .await?
            }
            Dialect::Sqlite => {
                let marker = tx_marker();
                let rows = sqlx::query_as(q::CLAIM_IDS_SQLITE)
                    .bind(node)
                    .bind(&ids)
                    .bind(now)
                    .bind(marker)
                    .fetch_all(&mut *tx)
                    .await?;
                sqlx::query(q::CLAIM_IDS_SQLITE_HISTORY).bind(node).bind(marker).execute(&mut *tx).await?;
                sqlx::query(q::CLAIM_IDS_SQLITE_QUEUED)
                    .bind(node)
                    .bind(marker)
                    .bind(report_window_ms)
                    .execute(&mut *tx)
                    .await?;
                rows
            }
        };
        let adds: Vec<UsageJson<'_>> = added
            .iter()
            .filter_map(|((name, key), n)| {
                let l = by_name.get(name.as_str())?;
                let (start, end) = window(now, u64::try_from(l.per_ms).unwrap_or(1));
                Some(UsageJson { name, key, start, end, n: *n })
            })
            .collect();
        if !adds.is_empty() {
            sqlx::query(rq::USAGE_ADD.get(d)).bind(to_json(&adds)?).execute(&mut *tx).await?;
        }
        (rows, held_for_ms)
    });
    let mut claimed = decode_claimed(rows)?;
    claimed.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    Ok(RateClaim { claimed, held_for_ms })
}

/// A limit a claim of rate-limited calls locked, with the database clock.
#[derive(sqlx::FromRow)]
struct LimitNow {
    name: String,
    limit_n: i64,
    per_ms: i64,
    key_path: Option<String>,
    now: i64,
}

/// One row of [`q::INVOCATION_WAITING`].
#[derive(sqlx::FromRow)]
struct WaitingRow {
    held_by: String,
    policy: Option<String>,
    since: Option<i64>,
}

/// Why an invocation waits ([`Store::invocation_waiting`]).
pub(super) async fn waiting(store: &SqlStore, id: &str) -> StoreResult<Option<Waiting>> {
    let row: Option<WaitingRow> =
        on_read!(store, |db, d| sqlx::query_as(q::INVOCATION_WAITING.get(d)).bind(id).fetch_optional(db).await?);
    row.map(|r| {
        let policy = r.policy.as_deref().map(super::components::parse_concurrency).transpose()?;
        Ok(Waiting::running_concurrency(policy.unwrap_or_default(), r.held_by, r.since))
    })
    .transpose()
}

pub(super) async fn get(store: &SqlStore, id: &str) -> StoreResult<Option<Invocation>> {
    let row: Option<InvocationRow> =
        on_read!(store, |db, d| sqlx::query_as(q::INVOCATION_GET.get(d)).bind(id).fetch_optional(db).await?);
    row.map(InvocationRow::decode).transpose()
}

pub(super) async fn find_routed(store: &SqlStore, scopes: &[String], keys: &[String]) -> StoreResult<Vec<Invocation>> {
    if scopes.is_empty() && keys.is_empty() {
        return Ok(Vec::new());
    }
    let (scopes, keys) = (to_json(scopes)?, to_json(keys)?);
    let rows: Vec<InvocationRow> = on_read!(store, |db, d| sqlx::query_as(q::INVOCATION_FIND_ROUTED.get(d))
        .bind(scopes)
        .bind(keys)
        .fetch_all(db)
        .await?);
    rows.into_iter().map(InvocationRow::decode).collect()
}

pub(super) async fn debounce(store: &SqlStore, calls: &[crate::store::Debounce]) -> StoreResult<Vec<String>> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let json = to_json(calls)?;
    let ids: Vec<String> = in_tx!(store, |tx, d| sqlx::query_scalar(sql::transitions::INVOCATION_DEBOUNCE.get(d))
        .bind(&json)
        .fetch_all(&mut *tx)
        .await?);
    Ok(ids)
}

pub(super) async fn purge(store: &SqlStore, fence: &Fence, older_than_ms: u64, limit: u32) -> StoreResult<u64> {
    let age = i64::try_from(older_than_ms).unwrap_or(i64::MAX);
    let purged = in_tx!(store, |tx, d| {
        check_fence(&mut *tx, fence).await?;
        sqlx::query(q::PURGE_HISTORY.get(d)).bind(age).bind(i64::from(limit)).execute(&mut *tx).await?;
        sqlx::query(q::PURGE_INVOCATIONS.get(d))
            .bind(age)
            .bind(i64::from(limit))
            .execute(&mut *tx)
            .await?
            .rows_affected()
    });
    Ok(purged)
}

pub(super) async fn children(store: &SqlStore, parent: &str) -> StoreResult<Vec<Invocation>> {
    let rows: Vec<InvocationRow> =
        on_read!(store, |db, d| sqlx::query_as(q::INVOCATION_CHILDREN.get(d)).bind(parent).fetch_all(db).await?);
    rows.into_iter().map(InvocationRow::decode).collect()
}

pub(super) async fn get_many(store: &SqlStore, ids: &[String]) -> StoreResult<Vec<Invocation>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let json = to_json(ids)?;
    let rows: Vec<InvocationRow> =
        on_read!(store, |db, d| sqlx::query_as(q::INVOCATION_GET_MANY.get(d)).bind(&json).fetch_all(db).await?);
    // Input order; an id asked for twice is returned twice.
    let mut left: HashMap<&str, usize> = HashMap::new();
    for id in ids {
        *left.entry(id.as_str()).or_default() += 1;
    }
    let mut by_id: HashMap<String, Invocation> =
        decode_invocations(rows)?.into_iter().map(|inv| (inv.id.clone(), inv)).collect();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let n = left.entry(id.as_str()).or_default();
        *n = n.saturating_sub(1);
        let found = if *n > 0 { by_id.get(id).cloned() } else { by_id.remove(id) };
        out.extend(found);
    }
    Ok(out)
}

pub(super) async fn list(store: &SqlStore, filter: &InvocationFilter) -> StoreResult<Vec<Invocation>> {
    let statement = match (&filter.task, filter.status) {
        (None, None) => q::INVOCATION_LIST,
        (Some(_), None) => q::INVOCATION_LIST_TASK,
        (None, Some(_)) => q::INVOCATION_LIST_STATUS,
        (Some(_), Some(_)) => q::INVOCATION_LIST_TASK_STATUS,
    };
    let rows: Vec<InvocationRow> = on_read!(store, |db, d| {
        let mut q = sqlx::query_as(statement.get(d)).bind(filter.cursor.as_deref()).bind(i64::from(filter.limit));
        if let Some(task) = &filter.task {
            q = q.bind(task.as_str());
        }
        if let Some(status) = filter.status {
            q = q.bind(status.as_str());
        }
        q.fetch_all(db).await?
    });
    decode_invocations(rows)
}

pub(super) async fn count(
    store: &SqlStore,
    task: Option<&str>,
    status: Option<InvocationStatus>,
) -> StoreResult<Vec<StatusCount>> {
    let statement = match (task, status) {
        (None, None) => q::INVOCATION_COUNT,
        (Some(_), None) => q::INVOCATION_COUNT_TASK,
        (None, Some(_)) => q::INVOCATION_COUNT_STATUS,
        (Some(_), Some(_)) => q::INVOCATION_COUNT_TASK_STATUS,
    };
    let rows: Vec<CountRow> = on_read!(store, |db, d| {
        let mut q = sqlx::query_as(statement.get(d));
        if let Some(task) = task {
            q = q.bind(task);
        }
        if let Some(status) = status {
            q = q.bind(status.as_str());
        }
        q.fetch_all(db).await?
    });
    rows.into_iter()
        .map(|r| Ok(StatusCount { status: parse_status(&r.status)?, task: r.task, count: r.count }))
        .collect()
}

pub(super) async fn history(store: &SqlStore, id: &str) -> StoreResult<Vec<HistoryEntry>> {
    let rows: Vec<HistoryRow> =
        on_read!(store, |db, d| sqlx::query_as(q::INVOCATION_HISTORY.get(d)).bind(id).fetch_all(db).await?);
    rows.into_iter()
        .map(|r| {
            Ok(HistoryEntry {
                status: parse_status(&r.status)?,
                node: r.node,
                attempt: to_u32("history attempt", r.attempt)?,
                at: r.at,
            })
        })
        .collect()
}
