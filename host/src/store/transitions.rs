//! Transitions of invocations for [`SqlStore`]: the compare-and-swap batch (passes, the SQLite
//! one-trip script, the history and instance records a transition writes, decided once for both
//! dialects), the explanation of refusals, late outcomes, the user's cancel with its signal, and
//! recovery (a node's restart, the leader retiring a dead node), where lost attempts count
//! toward `max_attempts`. A child of `engine.rs` (it
//! shares its transaction macros); the SQL is in `sql_transitions.rs`.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::invocations::{HistoryJson, insert_history};
use super::{
    Commit, Conn, Dialect, NameRow, Pools, SqlStore, check_fence, check_json, corrupt, error_kind_name, one_trip,
    parse_status, pg_statement, sql, to_json, to_u32, tx_marker,
};
use crate::model::instance::InstanceStatus;
use crate::model::status::Ownership;
use crate::model::{ErrorKind, Invocation, InvocationStatus, Owner, TaskFailure, TaskInstance, Transition};
use crate::store::write_gate::Lane;
use crate::store::{Fence, Store, StoreResult, TransitionOutcome};

use sql::transitions as q;

/// The way back from an owned status whose owner is gone: `pending_recovery` from `pending`,
/// `running_recovery` otherwise, then `rerouted`.
pub(super) fn recovery_path(from: InvocationStatus) -> Vec<InvocationStatus> {
    let via = if from == InvocationStatus::Pending {
        InvocationStatus::PendingRecovery
    } else {
        InvocationStatus::RunningRecovery
    };
    vec![via, InvocationStatus::Rerouted]
}

/// One lost attempt for [`q::INSTANCE_END_LOST`], with the message its instance ends with.
#[derive(Serialize)]
struct LostJson<'a> {
    id: &'a str,
    attempt: u32,
    message: String,
}

#[derive(sqlx::FromRow)]
pub(super) struct AppliedRow {
    id: String,
    attempts: i64,
    updated_at: i64,
}

/// An invocation to move along a path without being its owner's attempt: recovery and
/// concurrency control (the compare-and-swap checks the owner it had when read).
#[derive(sqlx::FromRow)]
pub(super) struct MovableRow {
    pub(super) id: String,
    pub(super) status: String,
    pub(super) attempts: i64,
    pub(super) owner_node: Option<String>,
    /// Its attempt limit (its own, else its task's); read by the recovery statements only.
    #[sqlx(default)]
    pub(super) max_attempts: i64,
    /// How many of its earlier attempts were lost with their node; recovery statements only.
    #[sqlx(default)]
    pub(super) lost_before: i64,
    /// How many of its claims were handed back before they started (they do not count toward
    /// `max_attempts`); recovery statements only.
    #[sqlx(default)]
    pub(super) unstarted: i64,
}

/// Why an attempt was lost, for its instance and, when it was the last, its invocation.
pub(super) struct LostCause<'a> {
    /// What happened to the attempt (`node `n1` restarted while it held the attempt`).
    pub(super) what: &'a str,
    /// Who recovers it (history and messages): the node itself at start, or the leader.
    pub(super) by: &'a str,
    /// The attempt is known not to have started: a claim the leader takes back from a live
    /// node after `max_pending` (a node marks an attempt `running` within
    /// `MARK_RUNNING_AFTER` of its start). It is rerouted, never failed, and does not count
    /// toward `max_attempts`. A claim lost with a dead node is not known so: the node may have
    /// died running it, and then it counts.
    pub(super) unstarted: bool,
}

/// Recovery of attempts lost with their node (a restart, the retirement of a dead node,
/// `max_pending`, triage): each row goes back to the queue along [`recovery_path`], unless the
/// lost attempt was its last (`attempts - unstarted >= max_attempts`): then it ends `failed`
/// with error kind `lost`, saying how many attempts were lost. Lost attempts count toward
/// `max_attempts` as Jobmon's errored instances do, so a call that kills or stalls every node
/// that runs it stops circulating; claims known not to have started ([`LostCause::unstarted`])
/// do not, so a call that waits in a busy node's queue is never failed for attempts that
/// never ran.
pub(super) fn lost_moves(rows: Vec<MovableRow>, cause: &LostCause<'_>) -> StoreResult<Vec<Transition>> {
    let limits: HashMap<String, (i64, i64, i64)> =
        rows.iter().map(|r| (r.id.clone(), (r.max_attempts, r.lost_before, r.unstarted))).collect();
    let mut changes = moves(rows, cause.by, recovery_path)?;
    for t in &mut changes {
        if cause.unstarted {
            t.unstarted = true;
            continue;
        }
        let (Some(owner), Some(&(max, lost_before, unstarted))) = (&t.owner, limits.get(&t.id)) else { continue };
        if i64::from(owner.attempt) - unstarted < max {
            continue;
        }
        let lost = lost_before + 1;
        let plural = if lost == 1 { "" } else { "s" };
        let not_counted = match unstarted {
            0 => String::new(),
            1 => "; 1 claim handed back before it started does not count".to_owned(),
            n => format!("; {n} claims handed back before they started do not count"),
        };
        t.path.pop();
        t.path.push(InvocationStatus::Failed);
        t.error = Some(TaskFailure::new(
            ErrorKind::Lost,
            format!(
                "{lost} attempt{plural} lost with their node, and attempt {} was the last (max_attempts \
                 {max}{not_counted}); the last: {}",
                owner.attempt, cause.what
            ),
        ));
    }
    Ok(changes)
}

/// The message a lost attempt's instance ends with.
fn lost_message(t: &Transition, cause: &LostCause<'_>) -> String {
    let then = if t.to() == InvocationStatus::Failed {
        "it was the last attempt: the invocation failed"
    } else {
        "the invocation was rerouted"
    };
    format!("attempt lost: {}; {then}", cause.what)
}

/// Transitions moving each row from its status, with its owner, along `path(from)`, by `node`.
pub(super) fn moves(
    rows: Vec<MovableRow>,
    node: &str,
    path: impl Fn(InvocationStatus) -> Vec<InvocationStatus>,
) -> StoreResult<Vec<Transition>> {
    rows.into_iter()
        .map(|r| {
            let from = parse_status(&r.status)?;
            let owner = match r.owner_node {
                Some(n) => Some(Owner { node: n, attempt: to_u32("attempts", r.attempts)? }),
                None => None,
            };
            Ok(Transition {
                id: r.id,
                from,
                owner,
                path: path(from),
                result: None,
                error: None,
                node: node.to_owned(),
                delay_ms: 0,
                unstarted: false,
                instance: None,
            })
        })
        .collect()
}

/// One transition of a pass as [`q::INVOCATION_TRANSITION`] reads it.
#[derive(Serialize)]
struct TransitionJson<'a> {
    id: &'a str,
    from: &'static str,
    to: &'static str,
    node: &'a str,
    owner_node: Option<&'a str>,
    owner_attempt: Option<i64>,
    owner_mode: &'static str,
    attempt_inc: i64,
    unstarted_inc: i64,
    result: Option<&'a str>,
    error_kind: Option<String>,
    error_message: Option<&'a str>,
    delay_ms: i64,
}

/// The JSON parameter of one transition pass.
fn transition_json(pass: &[&Transition]) -> StoreResult<String> {
    let mut rows = Vec::with_capacity(pass.len());
    for t in pass {
        // What entering the path does to ownership: the last status that touches it wins.
        let mut owner_mode = "keep";
        let mut attempt_inc = 0;
        for status in &t.path {
            match status.ownership() {
                Ownership::Releases | Ownership::Overrides => owner_mode = "clear",
                Ownership::Acquires => {
                    owner_mode = "set";
                    attempt_inc += 1;
                }
                Ownership::Free | Ownership::Requires => {}
            }
        }
        rows.push(TransitionJson {
            id: &t.id,
            from: t.from.as_str(),
            to: t.to().as_str(),
            node: &t.node,
            owner_node: t.owner.as_ref().map(|o| o.node.as_str()),
            owner_attempt: t.owner.as_ref().map(|o| i64::from(o.attempt)),
            owner_mode,
            attempt_inc,
            unstarted_inc: i64::from(t.unstarted),
            result: t.result.as_deref(),
            error_kind: t.error.as_ref().map(|e| error_kind_name(e.kind)).transpose()?,
            error_message: t.error.as_ref().map(|e| e.message.as_str()),
            delay_ms: i64::try_from(t.delay_ms).unwrap_or(i64::MAX),
        });
    }
    to_json(&rows)
}

/// The positions in `pass` of the transitions whose rows the UPDATE changed (`applied`), in
/// order.
fn applied_positions(pass: &[&Transition], applied: &[AppliedRow]) -> StoreResult<Vec<usize>> {
    let position: HashMap<&str, usize> = pass.iter().enumerate().map(|(i, t)| (t.id.as_str(), i)).collect();
    let mut positions = Vec::with_capacity(applied.len());
    for row in applied {
        let i = position
            .get(row.id.as_str())
            .copied()
            .ok_or_else(|| corrupt("transition", format!("unexpected id `{}` updated", row.id)))?;
        positions.push(i);
    }
    positions.sort_unstable();
    Ok(positions)
}

/// Whether a transition's path is a walk of the status table from its `from` status.
fn follows_table(t: &Transition) -> bool {
    let mut at = t.from;
    !t.path.is_empty()
        && t.path.iter().all(|&next| {
            let ok = at.can_move_to(next);
            at = next;
            ok
        })
}

// ---------------------------------------------------------------------------------------------
// What a transition writes besides the invocation row, decided here once for both dialects:
// one history row per status of its path, in order, written by its node, with the attempt and
// time the row has after the change ([`path_rows`]); and the record of the attempt it ends,
// the last given per attempt ([`instance_records`]). PostgreSQL (and SQLite's passes after the
// first) insert them statement by statement for the applied transitions; SQLite's one-trip
// script receives them for the whole pass and keeps those of the rows it changed.

/// A history row of a transition before the database fills in its attempt and time.
#[derive(Serialize)]
struct PathRow<'a> {
    id: &'a str,
    status: &'static str,
    node: &'a str,
}

/// The history rows transition `t` writes: one per status of its path, in order, by its node.
fn path_rows(t: &Transition) -> impl Iterator<Item = PathRow<'_>> {
    t.path.iter().map(move |s| PathRow { id: &t.id, status: s.as_str(), node: &t.node })
}

/// The instance records of `transitions` (those that applied), one per attempt: the last given
/// (a batch of several passes can move one attempt twice, and PostgreSQL refuses an upsert that
/// touches a row twice), sorted by (invocation, attempt), the order in which every write locks
/// instances.
fn instance_records<'a>(transitions: impl Iterator<Item = &'a Transition>) -> Vec<&'a TaskInstance> {
    let mut last: std::collections::BTreeMap<(&str, u32), &TaskInstance> = std::collections::BTreeMap::new();
    for r in transitions.filter_map(|t| t.instance.as_deref()) {
        last.insert((r.invocation_id.as_str(), r.attempt), r);
    }
    last.into_values().collect()
}

/// An instance record as [`q::INSTANCE_INSERT`] and the transition script read it.
#[derive(Serialize)]
struct InstanceJson<'a> {
    invocation_id: &'a str,
    attempt: i64,
    node: &'a str,
    status: &'a str,
    error_kind: Option<String>,
    error_message: Option<&'a str>,
    wall_ms: i64,
    peak_memory_bytes: i64,
    stdout: &'a str,
    stderr: &'a str,
    logs: String,
    output_truncated: i64,
    report_window_ms: Option<i64>,
}

/// The JSON array of task instances for [`q::INSTANCE_INSERT`] and the transition script.
fn instances_json<'a>(instances: impl Iterator<Item = &'a TaskInstance>) -> StoreResult<String> {
    let rows = instances
        .map(|t| {
            Ok(InstanceJson {
                invocation_id: &t.invocation_id,
                attempt: i64::from(t.attempt),
                node: &t.node,
                status: t.status.as_str(),
                error_kind: t.error.as_ref().map(|e| error_kind_name(e.kind)).transpose()?,
                error_message: t.error.as_ref().map(|e| e.message.as_str()),
                wall_ms: i64::try_from(t.wall_ms).unwrap_or(i64::MAX),
                peak_memory_bytes: i64::try_from(t.peak_memory_bytes).unwrap_or(i64::MAX),
                stdout: &t.stdout,
                stderr: &t.stderr,
                logs: t.logs.to_string(),
                output_truncated: i64::from(t.output_truncated),
                report_window_ms: t.report_window_ms,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    to_json(&rows)
}

/// The instance writes the instance table allows ([`InstanceStatus::writes_text`]), the text
/// every instance write is matched against; computed once.
pub(super) fn instance_writes() -> &'static str {
    static WRITES: std::sync::LazyLock<String> = std::sync::LazyLock::new(InstanceStatus::writes_text);
    &WRITES
}

/// Logs, in one line, the instance records of `sent` that were not written (`written`: the
/// keys the statement returned): writes the instance table forbids (or of a final instance),
/// ignored as untimely, as Jobmon does. `expected`: a late outcome, where that is normal
/// (debug); otherwise the invocation moved and its instance could not follow (warn).
fn log_untimely(sent: &[&TaskInstance], written: &HashSet<(String, i64)>, expected: bool) {
    let untimely: Vec<String> = sent
        .iter()
        .filter(|r| !written.contains(&(r.invocation_id.clone(), i64::from(r.attempt))))
        .map(|r| format!("{}#{} → {}", r.invocation_id, r.attempt, r.status))
        .collect();
    if untimely.is_empty() {
        return;
    }
    let first: Vec<&String> = untimely.iter().take(5).collect();
    if expected {
        tracing::debug!(count = untimely.len(), writes = ?first, "untimely task instance writes ignored");
    } else {
        tracing::warn!(count = untimely.len(), writes = ?first, "untimely task instance writes ignored (the instance table forbids them)");
    }
}

/// Records task instances ([`q::INSTANCE_INSERT`]) inside a transaction, each as far as the
/// instance table allows; none: no statement. Returns the keys written.
async fn insert_instances(
    conn: impl Into<Conn<'_>>,
    records: &[&TaskInstance],
    late: bool,
) -> StoreResult<HashSet<(String, i64)>> {
    if records.is_empty() {
        return Ok(HashSet::new());
    }
    let json = instances_json(records.iter().copied())?;
    let rows: Vec<AppliedRow> = on_conn!(conn.into(), |c, d| sqlx::query_as(q::INSTANCE_INSERT.get(d))
        .bind(&json)
        .bind(instance_writes())
        .fetch_all(&mut *c)
        .await?);
    let written: HashSet<(String, i64)> = rows.into_iter().map(|r| (r.id, r.attempts)).collect();
    log_untimely(records, &written, late);
    Ok(written)
}

/// The history JSON of the applied transitions of a pass ([`path_rows`], with the attempt and
/// time of the changed row) and their positions in the pass.
fn transition_history<'a>(
    pass: &[&'a Transition],
    applied: &'a [AppliedRow],
) -> StoreResult<(Vec<HistoryJson<'a>>, Vec<usize>)> {
    let positions = applied_positions(pass, applied)?;
    let by_id: HashMap<&str, &AppliedRow> = applied.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut history = Vec::new();
    for &i in &positions {
        let t = pass[i];
        let Some(row) = by_id.get(t.id.as_str()) else { continue };
        history.extend(path_rows(t).map(|p| HistoryJson {
            id: p.id,
            status: p.status,
            node: Some(p.node),
            attempt: row.attempts,
            at: row.updated_at,
        }));
    }
    Ok((history, positions))
}

/// The history a pass would write if every transition applied ([`path_rows`] of each, in pass
/// order); SQLite's one-trip transition keeps the rows of the transitions that did apply (see
/// [`q::INVOCATION_TRANSITION_ONE_TRIP`]).
fn path_history_json(pass: &[&Transition]) -> StoreResult<String> {
    to_json(&pass.iter().flat_map(|t| path_rows(t)).collect::<Vec<_>>())
}

// ---------------------------------------------------------------------------------------------
// Statements inside a write transaction.

/// One pass of compare-and-swap transitions (distinct ids, sorted by id) inside a transaction:
/// the UPDATE, then the history of the rows it changed. Returns the positions (in `pass`) of
/// the applied transitions.
async fn transition_pass(conn: impl Into<Conn<'_>>, pass: &[&Transition]) -> StoreResult<Vec<usize>> {
    let json = transition_json(pass)?;
    let mut conn = conn.into();
    let applied: Vec<AppliedRow> = on_conn!(&mut conn, |c, d| sqlx::query_as(q::INVOCATION_TRANSITION.get(d))
        .bind(&json)
        .fetch_all(&mut **c)
        .await?);
    let (history, positions) = transition_history(pass, &applied)?;
    if !positions.is_empty() {
        insert_history(conn, &history).await?;
    }
    Ok(positions)
}

/// [`transition_pass`] over owned transitions that may be none (then no statement runs).
pub(super) async fn apply_moves(conn: impl Into<Conn<'_>>, changes: &[Transition]) -> StoreResult<Vec<usize>> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let refs: Vec<&Transition> = changes.iter().collect();
    transition_pass(conn, &refs).await
}

/// Inside a transaction that took back `changes` ([`lost_moves`]; `applied` the positions that
/// applied), ends the live instances of the attempts they took away, with error kind `lost`
/// and a message from `cause` ([`q::INSTANCE_END_LOST`]): the instances then say how each
/// lost attempt ended, instead of staying live until triage blames a missing heartbeat.
pub(super) async fn end_lost(
    conn: impl Into<Conn<'_>>,
    changes: &[Transition],
    applied: &[usize],
    cause: &LostCause<'_>,
) -> StoreResult<()> {
    let lost: Vec<LostJson<'_>> = applied
        .iter()
        .filter_map(|&i| changes.get(i))
        .filter_map(|t| {
            t.owner.as_ref().map(|o| LostJson { id: &t.id, attempt: o.attempt, message: lost_message(t, cause) })
        })
        .collect();
    if lost.is_empty() {
        return Ok(());
    }
    let json = to_json(&lost)?;
    on_conn!(conn.into(), |c, d| {
        let ended = sqlx::query(q::INSTANCE_END_LOST.get(d))
            .bind(&json)
            .bind(instance_writes())
            .execute(&mut *c)
            .await?
            .rows_affected();
        if ended < lost.len() as u64 {
            tracing::debug!(lost = lost.len(), ended, "lost attempts whose instance was final or not live: left alone");
        }
    });
    Ok(())
}

/// Inside a transaction, takes back every invocation `node` owns in an owned status
/// ([`lost_moves`]: rerouted, or failed if it was its last attempt), with history written by
/// `cause.by`, and ends the live instances of the attempts lost so ([`end_lost`]). Returns how
/// many moved.
async fn reroute_owned(conn: impl Into<Conn<'_>>, node: &str, cause: &LostCause<'_>) -> StoreResult<usize> {
    let mut conn = conn.into();
    let owned: Vec<MovableRow> = on_conn!(&mut conn, |c, d| sqlx::query_as(q::INVOCATION_OWNED_BY.get(d))
        .bind(node)
        .fetch_all(&mut **c)
        .await?);
    let changes = lost_moves(owned, cause)?;
    let applied = apply_moves(&mut conn, &changes).await?;
    end_lost(&mut conn, &changes, &applied, cause).await?;
    Ok(applied.len())
}

// ---------------------------------------------------------------------------------------------
// The batch.

impl SqlStore {
    /// Says why the transitions at `rejected` (sent, not applied) were refused, from the rows
    /// as they are now: gone (`NotFound`), in another status (`LostRace`) or held by another
    /// owner (`WrongOwner`). Read after the fact, so only an explanation; the refusal itself
    /// was the compare-and-swap's. When `retried` (a try that failed may have been stored),
    /// a refusal that meets the change already made by the same writer is `Applied`.
    /// Returns the refused changes of attempts whose invocation is still theirs but behind
    /// where they left it (a crash lost their last relaxed commits), rebased to be written
    /// again from where it is ([`Transition::rebased`]), with their positions.
    async fn explain_rejections(
        &self,
        changes: &[Transition],
        rejected: &[usize],
        outcomes: &mut [TransitionOutcome],
        retried: bool,
    ) -> StoreResult<Vec<(usize, Transition)>> {
        let ids: Vec<String> = rejected.iter().map(|&i| changes[i].id.clone()).collect();
        let now: HashMap<String, Invocation> =
            self.invocation_get_many(&ids).await?.into_iter().map(|inv| (inv.id.clone(), inv)).collect();
        let mut behind = Vec::new();
        for &i in rejected {
            let t = &changes[i];
            outcomes[i] = match now.get(&t.id) {
                None => TransitionOutcome::NotFound,
                Some(inv) if retried && self.already_applied(t, inv).await? => TransitionOutcome::Applied,
                Some(inv) if inv.status != t.from => {
                    let still_ours = t.owner.as_ref().is_some_and(|o| held_by(inv, o));
                    if let Some(again) = t.rebased(inv.status).filter(|_| still_ours) {
                        tracing::warn!(
                            invocation = %t.id, attempt = inv.attempts, was = %t.from, now = %inv.status,
                            "the database lost this attempt's last status changes (a crash?); writing them again"
                        );
                        behind.push((i, again));
                    }
                    TransitionOutcome::LostRace
                }
                Some(inv) => match &t.owner {
                    Some(o) if !held_by(inv, o) => TransitionOutcome::WrongOwner,
                    _ => TransitionOutcome::LostRace,
                },
            };
        }
        Ok(behind)
    }
}

impl SqlStore {
    /// [`Store::invocation_transition_batch`]; `assume_retried` (tests) treats the batch as
    /// run again after a try that may have been stored ([`Retry::ambiguous`]).
    pub(in crate::store) async fn transition_batch(
        &self,
        changes: &[Transition],
        assume_retried: bool,
    ) -> StoreResult<Vec<TransitionOutcome>> {
        self.transition_batch_once(changes, assume_retried, true).await
    }

    /// [`Self::transition_batch`]; `rebase`: the refused changes of attempts that a crash
    /// set back are written again once, rebased (never the rebased ones again).
    async fn transition_batch_once(
        &self,
        changes: &[Transition],
        assume_retried: bool,
        rebase: bool,
    ) -> StoreResult<Vec<TransitionOutcome>> {
        let mut outcomes = vec![TransitionOutcome::LostRace; changes.len()];
        // Pass n holds the n-th transition of every id (positions in `changes`).
        let mut passes: Vec<Vec<usize>> = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, t) in changes.iter().enumerate() {
            if let Some(result) = &t.result {
                check_json("result", &t.id, result)?;
            }
            if !follows_table(t) {
                outcomes[i] = TransitionOutcome::BadTransition;
                continue;
            }
            let n = seen.entry(t.id.as_str()).or_insert(0);
            if passes.len() <= *n {
                passes.push(Vec::new());
            }
            passes[*n].push(i);
            *n += 1;
        }
        if passes.is_empty() {
            return Ok(outcomes);
        }
        let sent: Vec<usize> = passes.iter().flatten().copied().collect();
        for pass in &mut passes {
            pass.sort_unstable_by(|a, b| changes[*a].id.cmp(&changes[*b].id));
        }
        // Only batches that merely move attempts along (pending, running, paused, resumed) may
        // skip waiting for the disk; anything a client can observe as an outcome is durable.
        let durable = changes.iter().any(|t| !t.to().is_owned());
        // Whether a try that failed may have been stored: then a refusal may be our own change.
        let mut ambiguous = assume_retried;
        let applied: Vec<usize> = match (&self.pools, passes.as_slice()) {
            // The usual batch, one pass, on SQLite: one script.
            (Pools::Sqlite { writer, .. }, [pass]) => {
                let refs: Vec<&Transition> = pass.iter().map(|&i| &changes[i]).collect();
                let script =
                    if durable { q::INVOCATION_TRANSITION_ONE_TRIP } else { q::INVOCATION_TRANSITION_ONE_TRIP_RELAXED };
                let query = sqlx::query_as(script)
                    .bind(transition_json(&refs)?)
                    .bind(tx_marker())
                    .bind(path_history_json(&refs)?)
                    .bind(instances_json(instance_records(refs.iter().copied()).into_iter())?)
                    .bind(instance_writes());
                let rows: Vec<AppliedRow> = one_trip(writer, Lane::Background, "transitions", query).await?;
                one_trip_applied(pass, &refs, rows)?
            }
            // The usual batch, one pass, on PostgreSQL: one statement.
            (Pools::Postgres(pool), [pass]) => {
                let refs: Vec<&Transition> = pass.iter().map(|&i| &changes[i]).collect();
                let statement = if durable {
                    q::INVOCATION_TRANSITION_ONE_STATEMENT
                } else {
                    q::INVOCATION_TRANSITION_ONE_STATEMENT_RELAXED
                };
                let (json, history) = (transition_json(&refs)?, path_history_json(&refs)?);
                let instances = instances_json(instance_records(refs.iter().copied()).into_iter())?;
                let rows: Vec<AppliedRow> = pg_statement("transitions", &mut ambiguous, || {
                    sqlx::query_as(statement)
                        .bind(&json)
                        .bind(&history)
                        .bind(&instances)
                        .bind(instance_writes())
                        .fetch_all(pool)
                })
                .await?;
                one_trip_applied(pass, &refs, rows)?
            }
            _ => in_tx!(self, Commit::durable_if(durable), &mut ambiguous, |tx, d| {
                let _ = d;
                let mut applied = Vec::new();
                for pass in &passes {
                    let refs: Vec<&Transition> = pass.iter().map(|&i| &changes[i]).collect();
                    let positions = transition_pass(&mut *tx, &refs).await?;
                    applied.extend(positions.into_iter().map(|p| pass[p]));
                }
                insert_instances(&mut *tx, &instance_records(applied.iter().map(|&i| &changes[i])), false).await?;
                applied
            }),
        };
        let applied: HashSet<usize> = applied.into_iter().collect();
        let rejected: Vec<usize> = sent.into_iter().filter(|i| !applied.contains(i)).collect();
        for &i in &applied {
            outcomes[i] = TransitionOutcome::Applied;
        }
        if !rejected.is_empty() {
            let behind = self.explain_rejections(changes, &rejected, &mut outcomes, ambiguous).await?;
            // Written again from where the crash left them; their own refusals, if any, are
            // recorded by that write.
            let mut again: HashSet<usize> = HashSet::new();
            if rebase && !behind.is_empty() {
                let (at, rebased): (Vec<usize>, Vec<Transition>) = behind.into_iter().unzip();
                let out = Box::pin(self.transition_batch_once(&rebased, false, false)).await?;
                for (i, o) in at.into_iter().zip(out) {
                    outcomes[i] = o;
                    again.insert(i);
                }
            }
            let late = rejected.iter().filter(|&&i| !outcomes[i].is_applied() && !again.contains(&i));
            self.record_late_outcomes(late.filter_map(|&i| changes[i].instance.as_deref())).await?;
        }
        Ok(outcomes)
    }
}

/// What a one-trip pass (SQLite's script, PostgreSQL's statement) returned, `rows`: the
/// applied transitions and, marked by an `updated_at` of -1 (see `instance_insert!`), the
/// instances written. Logs the instance records of applied transitions that were not written
/// and returns the applied positions in `changes` (`pass` maps positions in `refs` to them).
fn one_trip_applied(pass: &[usize], refs: &[&Transition], rows: Vec<AppliedRow>) -> StoreResult<Vec<usize>> {
    let (written, rows): (Vec<AppliedRow>, Vec<AppliedRow>) = rows.into_iter().partition(|r| r.updated_at == -1);
    let positions = applied_positions(refs, &rows)?;
    let written: HashSet<(String, i64)> = written.into_iter().map(|r| (r.id, r.attempts)).collect();
    log_untimely(&instance_records(positions.iter().map(|&p| refs[p])), &written, false);
    Ok(positions.into_iter().map(|p| pass[p]).collect())
}

/// Whether `inv` is held by `owner`'s attempt (its node and attempt epoch).
fn held_by(inv: &Invocation, owner: &Owner) -> bool {
    inv.owner.as_deref() == Some(owner.node.as_str()) && inv.attempts == owner.attempt
}

impl SqlStore {
    /// Whether the attempt's write `t`, refused now, is stored already: a transaction retried
    /// after its commit was cut off (the connection died while the server committed) meets
    /// its own change. True when the row is in `t`'s target status and that move was this
    /// writer's: still owned by the same attempt for an owned status, or, for a status that
    /// releases the owner, written to the history by `t`'s node for that attempt.
    async fn already_applied(&self, t: &Transition, inv: &Invocation) -> StoreResult<bool> {
        let Some(owner) = &t.owner else { return Ok(false) };
        if inv.status != t.to() || inv.status == t.from {
            return Ok(false);
        }
        if t.to().is_owned() {
            return Ok(held_by(inv, owner));
        }
        let history = self.invocation_history(&t.id).await?;
        Ok(history
            .iter()
            .any(|h| h.status == t.to() && h.attempt == owner.attempt && h.node.as_deref() == Some(t.node.as_str())))
    }
}

impl SqlStore {
    /// Records the outcomes of attempts whose transition was refused (the invocation was final
    /// or taken away meanwhile): the instance ends `error_fatal` ("late outcome discarded"; an
    /// interrupted one keeps its `cancelled` error) without touching the invocation, where the
    /// instance table allows it; an instance already final, or one triage gave up on, is left
    /// alone (an untimely write).
    async fn record_late_outcomes<'a>(&self, records: impl Iterator<Item = &'a TaskInstance>) -> StoreResult<()> {
        let late: Vec<TaskInstance> = records
            .filter(|r| r.report_window_ms.is_none())
            .map(|r| {
                let mut r = r.clone();
                if r.error.as_ref().is_none_or(|e| e.kind != ErrorKind::Cancelled) {
                    let was = r.error.as_ref().map_or_else(|| "a result".to_string(), |e| e.to_string());
                    r.error = Some(TaskFailure::new(
                        ErrorKind::Fatal,
                        format!("late outcome discarded ({was}): the invocation was final or taken away"),
                    ));
                    r.status = crate::model::instance::InstanceStatus::ErrorFatal;
                }
                r
            })
            .collect();
        if late.is_empty() {
            return Ok(());
        }
        tracing::info!(count = late.len(), "recorded late attempt outcomes; their invocations are untouched");
        let records: Vec<&TaskInstance> = late.iter().collect();
        in_tx!(self, |tx, d| {
            let _ = d;
            insert_instances(&mut *tx, &records, true).await?;
        });
        Ok(())
    }
}

/// A user's change of an invocation another node may own, with a signal to its live instance
/// ([`Store::invocation_transition_signal`]).
pub(super) async fn transition_signal(
    store: &SqlStore,
    change: &Transition,
    signal: &str,
) -> StoreResult<(TransitionOutcome, Option<String>)> {
    if !follows_table(change) {
        return Ok((TransitionOutcome::BadTransition, None));
    }
    let (applied, node): (bool, Option<NameRow>) = in_tx!(store, |tx, d| {
        let applied = !transition_pass(&mut *tx, &[change]).await?.is_empty();
        let node = if applied {
            sqlx::query_as(sql::instances::INSTANCE_SIGNAL.get(d))
                .bind(&change.id)
                .bind(signal)
                .bind(instance_writes())
                .fetch_optional(&mut *tx)
                .await?
        } else {
            None
        };
        (applied, node)
    });
    if applied {
        return Ok((TransitionOutcome::Applied, node.map(|n| n.name)));
    }
    let mut outcomes = [TransitionOutcome::LostRace];
    store.explain_rejections(std::slice::from_ref(change), &[0], &mut outcomes, false).await?;
    Ok((outcomes[0], None))
}

/// Reroutes what `node` owned in its previous life ([`Store::invocation_recover_node`]).
pub(super) async fn recover_node(store: &SqlStore, node: &str) -> StoreResult<u64> {
    let what = format!("node `{node}` restarted while it held the attempt");
    let cause = LostCause { what: &what, by: node, unstarted: false };
    let recovered = in_tx!(store, |tx, d| {
        let _ = d;
        reroute_owned(&mut *tx, node, &cause).await?
    });
    Ok(u64::try_from(recovered).unwrap_or(u64::MAX))
}

/// The leader retires a dead node ([`Store::node_retire`]).
pub(super) async fn retire_node(store: &SqlStore, node: &str, fence: &Fence) -> StoreResult<u64> {
    let what = format!("node `{node}` stopped heartbeating and was retired by the leader `{}`", fence.node);
    let cause = LostCause { what: &what, by: &fence.node, unstarted: false };
    let recovered = in_tx!(store, |tx, d| {
        check_fence(&mut *tx, fence).await?;
        let n = reroute_owned(&mut *tx, node, &cause).await?;
        sqlx::query(sql::coord::NODE_LEAVE.get(d)).bind(node).execute(&mut *tx).await?;
        n
    });
    Ok(u64::try_from(recovered).unwrap_or(u64::MAX))
}

/// The leader's `max_pending` recovery ([`crate::store::Coordination::invocation_recover_pending`]).
pub(super) async fn recover_pending(
    store: &SqlStore,
    fence: &Fence,
    older_than_ms: i64,
    limit: u32,
) -> StoreResult<u64> {
    let what = format!(
        "claimed but not started within max_pending ({older_than_ms} ms); the leader `{}` took it back",
        fence.node
    );
    let cause = LostCause { what: &what, by: &fence.node, unstarted: true };
    let moved = in_tx!(store, |tx, d| {
        check_fence(&mut *tx, fence).await?;
        let rows: Vec<MovableRow> = sqlx::query_as(q::INVOCATION_PENDING_SINCE.get(d))
            .bind(older_than_ms)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let changes = lost_moves(rows, &cause)?;
        let applied = apply_moves(&mut *tx, &changes).await?;
        end_lost(&mut *tx, &changes, &applied, &cause).await?;
        applied.len()
    });
    Ok(u64::try_from(moved).unwrap_or(u64::MAX))
}

/// Concurrency drops by the leader ([`crate::store::Coordination::invocation_drop_blocked`]).
pub(super) async fn drop_blocked(
    store: &SqlStore,
    fence: &Fence,
    tasks: &[String],
    limit: u32,
) -> StoreResult<Vec<String>> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let names = to_json(tasks)?;
    let dropped = in_tx!(store, |tx, d| {
        check_fence(&mut *tx, fence).await?;
        let rows: Vec<MovableRow> = sqlx::query_as(q::INVOCATION_BLOCKED.get(d))
            .bind(&names)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let changes = moves(rows, &fence.node, |_| vec![InvocationStatus::ConcurrencyControlledFinal])?;
        let applied = apply_moves(&mut *tx, &changes).await?;
        applied.into_iter().filter_map(|i| changes.get(i).map(|c| c.id.clone())).collect::<Vec<_>>()
    });
    Ok(dropped)
}
