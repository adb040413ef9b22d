//! Support of the chaos suite (`tests/e2e/chaos.rs`): clients that route batches through
//! whichever nodes are alive and retry under idempotency keys until acknowledged, faults
//! against PostgreSQL (terminated backends, a server of its own that can be stopped and
//! started), the count of what the daemons logged, and [`audit`], the one checker every
//! scenario ends with: per acknowledged id, stored, exactly one success, no false failure, and
//! a history that tells the same attempts as the task instances.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;

use crate::harness::Api;

// ---------------------------------------------------------------------------------------------
// Clients.

/// The nodes clients may route through: slot `i` holds node `i`'s API while it is up.
#[derive(Clone, Default)]
pub struct Targets(Arc<Mutex<Vec<Option<Api>>>>);

impl Targets {
    /// Targets over these APIs.
    pub fn new(apis: impl IntoIterator<Item = Api>) -> Self {
        Self(Arc::new(Mutex::new(apis.into_iter().map(Some).collect())))
    }

    /// Marks node `i` up (with its API) or down.
    pub fn set(&self, i: usize, api: Option<Api>) {
        let mut v = self.0.lock().expect("targets");
        if v.len() <= i {
            v.resize(i + 1, None);
        }
        v[i] = api;
    }

    /// A node that is up, starting the search at `from` (round robin by the caller).
    pub fn pick(&self, from: usize) -> Option<Api> {
        let v = self.0.lock().expect("targets");
        (0..v.len()).find_map(|k| v[(from + k) % v.len()].clone())
    }
}

/// What the clients of one scenario did.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Batches acknowledged.
    pub batches: AtomicU64,
    /// Requests that got a 5xx or no answer (each batch was sent again, same keys).
    pub retries: AtomicU64,
    /// Calls a retry found already stored (`"reused": true`): the first try committed but its
    /// answer was lost.
    pub reused: AtomicU64,
}

impl ClientStats {
    /// One line for the closing figures.
    pub fn summary(&self) -> String {
        format!(
            "batches {} · retried requests {} · calls found stored by a retry {}",
            self.batches.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
            self.reused.load(Ordering::Relaxed)
        )
    }
}

/// An HTTP client for chaos: short timeouts, so a request to a dead or stalled node is retried
/// elsewhere.
pub fn chaos_http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("http client")
}

/// Routes `calls` (`{"task","args"}` values) as one `POST /v1/invocations/batch`, call `i` under
/// the idempotency key `{key}-{i}`, through the nodes of `targets` (round robin from `from`).
/// A 5xx or a failed request is sent again (same keys: a batch that committed answers with the
/// same invocations) until acknowledged or `deadline`; a 4xx fails the test. Returns the ids,
/// in call order.
pub async fn route_batch(
    targets: &Targets,
    http: &reqwest::Client,
    stats: &ClientStats,
    key: &str,
    calls: &[Value],
    from: usize,
    deadline: Instant,
) -> Vec<String> {
    let body: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut c = c.clone();
            c["options"] = json!({"idempotency_key": format!("{key}-{i}")});
            c
        })
        .collect();
    let body = json!({ "calls": body });
    let mut k = from;
    let mut last = String::from("no node was up");
    while Instant::now() < deadline {
        let Some(api) = targets.pick(k) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        k += 1;
        match http.post(format!("{}/v1/invocations/batch", api.url)).json(&body).send().await {
            Ok(r) if r.status().is_success() => {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                let Some(list) = v["invocations"].as_array() else {
                    last = format!("2xx without invocations: {v}");
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                assert_eq!(list.len(), calls.len(), "one invocation per call: {v}");
                let reused = list.iter().filter(|i| i["reused"] == true).count() as u64;
                stats.reused.fetch_add(reused, Ordering::Relaxed);
                stats.batches.fetch_add(1, Ordering::Relaxed);
                return list.iter().map(|i| i["id"].as_str().expect("id").to_string()).collect();
            }
            Ok(r) if r.status().is_server_error() => {
                let s = r.status();
                last = format!("{s}: {}", r.text().await.unwrap_or_default());
            }
            Ok(r) => {
                let s = r.status();
                panic!("batch {key} refused with {s}: {}", r.text().await.unwrap_or_default());
            }
            Err(e) => last = format!("{}: {e}", api.url),
        }
        stats.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("batch {key} never acknowledged; last answer: {last}");
}

/// `n` calls of `hello`, named `{prefix}{i}` (distinct arguments: no call is folded into another).
pub fn hellos(prefix: &str, n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"task": "hello", "args": {"name": format!("{prefix}{i}")}})).collect()
}

/// `n` calls of `slow` of `ms` each, tagged `{prefix}{i}` (distinct arguments; the task
/// ignores the tag).
pub fn slows(prefix: &str, ms: u64, n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"task": "slow", "args": {"ms": ms, "tag": format!("{prefix}{i}")}})).collect()
}

// ---------------------------------------------------------------------------------------------
// Faults against PostgreSQL.

/// The database name of a PostgreSQL URL.
pub fn database_name(url: &str) -> String {
    url.rsplit_once('/').map(|(_, n)| n.split('?').next().unwrap_or(n).to_string()).unwrap_or_default()
}

/// A storm of `pg_terminate_backend` over every connection to one database, until stopped.
pub struct TerminateStorm {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl TerminateStorm {
    /// Every `period`, terminates every backend connected to the database of `target` (through
    /// a connection of `admin_url`, a database of the same server).
    pub fn start(admin_url: &str, target: &str, period: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (admin, db, halt) = (admin_url.to_string(), database_name(target), stop.clone());
        let task = tokio::spawn(async move {
            let (mut rounds, mut killed) = (0u64, 0u64);
            let mut conn = sqlx::PgConnection::connect(&admin).await.expect("storm connection");
            while !halt.load(Ordering::Relaxed) {
                let n: Vec<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&db)
                .fetch_all(&mut conn)
                .await
                .expect("pg_terminate_backend");
                rounds += 1;
                killed += n.iter().filter(|b| **b).count() as u64;
                tokio::time::sleep(period).await;
            }
            (rounds, killed)
        });
        Self { stop, task }
    }

    /// Stops the storm; returns (rounds, backends terminated).
    pub async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("storm task")
    }
}

/// The PostgreSQL server the chaos suite may stop and start: cluster `chaos` of the machine's
/// major version on port 5433, created the Debian way (`pg_createcluster`) and started the way
/// `.ci/run` starts the main one (`pg_ctlcluster --skip-systemctl-redirect`). Holding this
/// value holds a lock across test processes (an advisory lock on the main server of
/// `DATABASE_URL`, released when its connection closes, even if the process dies), so one test
/// at a time creates, stops and starts it.
pub struct ChaosPostgres {
    _lock: sqlx::PgConnection,
    major: String,
}

/// The advisory lock key of [`ChaosPostgres`] ("WARDCHAO").
const CHAOS_LOCK_KEY: i64 = 0x5741_5244_4348_414f;

/// Port of [`ChaosPostgres`].
pub const CHAOS_PG_PORT: u16 = 5433;

async fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(cmd)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {cmd} (the chaos suite needs Debian's postgresql-common): {e}"))
}

impl ChaosPostgres {
    /// Takes the lock, creates the cluster if `pg_lsclusters` lacks it, starts it if it is down,
    /// and waits until it answers; drops the databases earlier runs left there.
    pub async fn take() -> Self {
        let mut lock = sqlx::PgConnection::connect(&crate::harness::database_url()).await.expect("connect");
        sqlx::query("SELECT pg_advisory_lock($1)").bind(CHAOS_LOCK_KEY).execute(&mut lock).await.expect("lock");
        let versions = std::fs::read_dir("/etc/postgresql")
            .unwrap_or_else(|e| panic!("no /etc/postgresql ({e}): the chaos suite needs Debian's PostgreSQL packages"));
        let mut majors: Vec<String> =
            versions.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect();
        majors.sort_by_key(|m| m.parse::<u32>().unwrap_or(0));
        let major = majors.pop().expect("a PostgreSQL major version under /etc/postgresql");
        let me = Self { _lock: lock, major };
        let list = String::from_utf8_lossy(&run("pg_lsclusters", &["-h"]).await.stdout).into_owned();
        let line = list.lines().find(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[0] == me.major && f[1] == "chaos"
        });
        match line {
            None => {
                let port = CHAOS_PG_PORT.to_string();
                let out = run("pg_createcluster", &[&me.major, "chaos", "-p", &port, "--", "--auth=trust"]).await;
                assert!(out.status.success(), "pg_createcluster: {}", String::from_utf8_lossy(&out.stderr));
                me.start().await;
            }
            Some(l) if !l.split_whitespace().any(|w| w == "online") => me.start().await,
            Some(_) => me.wait_up().await,
        }
        let mut conn = sqlx::PgConnection::connect(&me.url("postgres")).await.expect("connect to the chaos server");
        let old: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'warden_chaos_%'")
                .fetch_all(&mut conn)
                .await
                .expect("databases");
        for db in old {
            let sql = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
        }
        me
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{CHAOS_PG_PORT}/{db}")
    }

    /// Creates a fresh database and returns its URL.
    pub async fn fresh_database(&self) -> String {
        let name = format!(
            "warden_chaos_{}_{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0)
        );
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres")).await.expect("connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        self.url(&name)
    }

    /// `pg_ctlcluster --skip-systemctl-redirect MAJOR chaos start`, then waits until it answers.
    pub async fn start(&self) {
        let out = run("pg_ctlcluster", &["--skip-systemctl-redirect", &self.major, "chaos", "start"]).await;
        assert!(out.status.success(), "pg_ctlcluster start: {}", String::from_utf8_lossy(&out.stderr));
        self.wait_up().await;
    }

    /// `pg_ctlcluster … chaos stop -m MODE` (`fast`: clean shutdown, `immediate`: a crash).
    pub async fn stop(&self, mode: &str) {
        let out = run("pg_ctlcluster", &["--skip-systemctl-redirect", &self.major, "chaos", "stop", "-m", mode]).await;
        assert!(out.status.success(), "pg_ctlcluster stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    async fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if sqlx::PgConnection::connect(&self.url("postgres")).await.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "the chaos PostgreSQL (port {CHAOS_PG_PORT}) does not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Logs.

/// What the daemons logged (stderr files of [`crate::process::Spec::log_to`]).
#[derive(Debug, Default, Clone)]
pub struct LogCounts {
    /// Lines naming a deadlock (`deadlock detected`, SQLSTATE 40P01): one per attempt whose
    /// write failed, so a deadlock of a group commit counts once per attempt of the batch.
    pub deadlocks: usize,
    /// Lines naming a serialization failure (SQLSTATE 40001).
    pub serialization_failures: usize,
    /// "could not record the outcome" lines: finished attempts whose outcome was discarded.
    pub outcomes_discarded: usize,
    /// "could not mark the attempt running" lines: guests interrupted on a failed write.
    pub running_not_marked: usize,
    /// Outcomes refused because the attempt was taken away (fencing of late outcomes).
    pub late_outcomes_refused: usize,
    /// An attempt's writes that a crash of the database lost and that its next write put back
    /// (`Transition::rebased`).
    pub lost_writes_redone: usize,
    /// ERROR lines.
    pub error_lines: usize,
    /// The attempts (invocation, attempt) whose outcome the logs say was discarded.
    pub discarded: BTreeSet<(String, u32)>,
}

/// The value of `key=` in a log line (up to the next space, `}` or `:`).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at =
        line.find(&format!(" {key}=")).map(|i| i + 1).or_else(|| line.find(&format!("{{{key}=")).map(|i| i + 1))?;
    let rest = &line[at + key.len() + 1..];
    let end = rest.find([' ', '}', ':', ',']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Counts the lines of the log files.
pub fn scan_logs(files: &[PathBuf]) -> LogCounts {
    let mut c = LogCounts::default();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines() {
            let l = line.to_ascii_lowercase();
            if l.contains("deadlock detected") || l.contains("40p01") {
                c.deadlocks += 1;
            }
            if l.contains("could not serialize") || l.contains("40001") {
                c.serialization_failures += 1;
            }
            if l.contains(" error ") {
                c.error_lines += 1;
            }
            if l.contains("could not mark the attempt running") {
                c.running_not_marked += 1;
            }
            if l.contains("taken away from this node") {
                c.late_outcomes_refused += 1;
            }
            if l.contains("lost this attempt's last status changes") {
                c.lost_writes_redone += 1;
            }
            if l.contains("could not record the outcome") {
                c.outcomes_discarded += 1;
                if let (Some(id), Some(a)) = (field(line, "invocation"), field(line, "attempt")) {
                    c.discarded.insert((id.to_string(), a.parse().unwrap_or(0)));
                }
            }
        }
    }
    c
}

/// Log files in `dir` (`*.log`).
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "log")).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// Waiting and auditing.

const FINAL: &str = "('success', 'failed', 'cancelled', 'concurrency_controlled_final')";
const LIVE_INSTANCE: [&str; 6] = ["queued", "instantiated", "launched", "running", "triaging", "no_heartbeat"];

/// Polls the database until every invocation is final and every task instance has ended, or
/// `timeout` passes (then the audit reports what is not).
pub async fn wait_settled(db_url: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    let sql = format!(
        "SELECT (SELECT COUNT(*) FROM invocations WHERE status NOT IN {FINAL}) + \
         (SELECT COUNT(*) FROM task_instances WHERE status IN ('queued', 'instantiated', 'launched', 'running', \
         'triaging', 'no_heartbeat'))"
    );
    // What is still open, every 5 s: a slow settle says where it waits.
    let open = format!(
        "SELECT status || ' (' || COALESCE(owner_node, '-') || ')', COUNT(*) FROM invocations \
         WHERE status NOT IN {FINAL} GROUP BY 1 ORDER BY 1"
    );
    let mut told = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(mut conn) = sqlx::PgConnection::connect(db_url).await
            && let Ok(n) = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.clone())).fetch_one(&mut conn).await
        {
            if n == 0 {
                return start.elapsed();
            }
            if told.elapsed() >= Duration::from_secs(5) {
                told = Instant::now();
                let rows: Vec<(String, i64)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(open.clone())).fetch_all(&mut conn).await.unwrap_or_default();
                eprintln!("not settled after {:.0?}: {rows:?}", start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    start.elapsed()
}

/// The figures of one scenario, per acknowledged id.
#[derive(Debug, Default)]
pub struct Audit {
    /// Ids the clients got in a 2xx answer.
    pub acknowledged: usize,
    /// Of those, the ones in the database.
    pub stored: usize,
    /// Invocations in the database (acknowledged or not).
    pub stored_total: usize,
    /// Ids that ended `success` with one `success` in the history and one `done` instance.
    pub exactly_one_success: usize,
    /// Ids with more than one success (history rows or `done` instances).
    pub multiple_successes: Vec<String>,
    /// Ids not final.
    pub not_final: Vec<String>,
    /// Ids that ended final but not `success`: (id, status, error kind).
    pub false_failures: Vec<(String, String, String)>,
    /// Of those, the ones of kind `cancelled` (nobody cancelled anything).
    pub false_cancelled: usize,
    /// Task instances (attempts) of the acknowledged ids.
    pub instances: usize,
    /// Ids that ran more than once.
    pub reexecuted_calls: usize,
    /// Attempts beyond the first, summed.
    pub reexecutions: usize,
    /// Instances whose end blames a node that stopped reporting (`unknown_error`, `no_heartbeat`,
    /// or a "stopped reporting" error set by triage).
    pub blamed_on_heartbeat: usize,
    /// Where the history and the instances disagree, one line per attempt.
    pub history_mismatches: Vec<String>,
    /// Calls per second from the first routing to the last final change (database clock).
    pub throughput: f64,
    /// Deadlocks PostgreSQL detected in the database (`pg_stat_database`; a backend reports
    /// its count within a second or when it exits, so audit after stopping the nodes).
    pub db_deadlocks: i64,
    /// What the daemons logged.
    pub logs: LogCounts,
}

fn first<T: std::fmt::Debug>(v: &[T]) -> String {
    let shown: Vec<String> = v.iter().take(5).map(|x| format!("{x:?}")).collect();
    if v.len() > 5 { format!("{} (+{} more)", shown.join(", "), v.len() - 5) } else { shown.join(", ") }
}

impl std::fmt::Display for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |n: usize| if self.acknowledged == 0 { 0.0 } else { 100.0 * n as f64 / self.acknowledged as f64 };
        writeln!(
            f,
            "acknowledged {} · stored {} (in the database: {}) · exactly one success {} · more than one {} · not final {}",
            self.acknowledged,
            self.stored,
            self.stored_total,
            self.exactly_one_success,
            self.multiple_successes.len(),
            self.not_final.len()
        )?;
        writeln!(
            f,
            "false failures {} (cancelled {}) · instances {} · re-executed calls {} ({:.3}%) · re-executions {} · \
             instances blamed on a silent node {} · history/instances mismatches {} · throughput {:.0} calls/s",
            self.false_failures.len(),
            self.false_cancelled,
            self.instances,
            self.reexecuted_calls,
            pct(self.reexecuted_calls),
            self.reexecutions,
            self.blamed_on_heartbeat,
            self.history_mismatches.len(),
            self.throughput
        )?;
        write!(
            f,
            "deadlocks detected by PostgreSQL {} · logs: lines naming a deadlock {} · serialization failures {} · outcomes discarded (could not record) {} · guests \
             interrupted on a failed `running` write {} · late outcomes refused {} · lost writes redone {} · ERROR lines {}",
            self.db_deadlocks,
            self.logs.deadlocks,
            self.logs.serialization_failures,
            self.logs.outcomes_discarded,
            self.logs.running_not_marked,
            self.logs.late_outcomes_refused,
            self.logs.lost_writes_redone,
            self.logs.error_lines
        )?;
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for (_, status, kind) in &self.false_failures {
            *kinds.entry(format!("{status}/{kind}")).or_default() += 1;
        }
        if !kinds.is_empty() {
            write!(f, "\n  false failures by status/kind: {kinds:?}")?;
        }
        for (what, list) in [
            ("not final", first(&self.not_final)),
            ("more than one success", first(&self.multiple_successes)),
            ("false failures", first(&self.false_failures)),
            ("history/instances", first(&self.history_mismatches)),
        ] {
            if !list.is_empty() {
                write!(f, "\n  {what}: {list}")?;
            }
        }
        Ok(())
    }
}

impl Audit {
    /// Asserts what every scenario must keep: acknowledged = stored (and nothing else stored),
    /// every id final with exactly one success, no false failure, history = instances.
    pub fn assert_clean(&self, scenario: &str) {
        let ok = self.acknowledged > 0
            && self.stored == self.acknowledged
            && self.stored_total == self.acknowledged
            && self.not_final.is_empty()
            && self.multiple_successes.is_empty()
            && self.false_failures.is_empty()
            && self.exactly_one_success == self.acknowledged
            && self.history_mismatches.is_empty();
        assert!(ok, "{scenario}: not every acknowledged call was kept exactly once and told truly:\n{self}");
    }
}

#[derive(sqlx::FromRow)]
struct InvRow {
    id: String,
    status: String,
    error_kind: Option<String>,
    created_at: i64,
    updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct HistRow {
    invocation_id: String,
    status: String,
    attempt: i64,
}

#[derive(sqlx::FromRow)]
struct InstRow {
    invocation_id: String,
    attempt: i64,
    node: String,
    status: String,
    error_message: Option<String>,
    ended_at: i64,
    report_by: Option<i64>,
}

/// The one checker of the chaos suite: reads the database at `db_url` directly and the log
/// files, and counts, per acknowledged id, what was stored, its successes, false failures,
/// re-executions and where the history and the task instances disagree. Prints the figures
/// with `scenario` and returns them.
///
/// History = instances means, per id: the attempts in the history (rows with attempt ≥ 1) are
/// the attempts of the instances; every instance has ended (a final status with an end time);
/// an attempt has a `done` instance exactly when the history has its `success`; and an attempt
/// the logs say ran but whose outcome could not be recorded shows `running` in the history and
/// an instance that does not blame a silent node (`unknown_error`, `no_heartbeat`, or `error`
/// after `no_heartbeat`) — its node was alive and reporting.
pub async fn audit(scenario: &str, db_url: &str, acknowledged: &[String], logs: &[PathBuf]) -> Audit {
    let mut conn = sqlx::PgConnection::connect(db_url).await.expect("audit connection");
    let invs: Vec<InvRow> = sqlx::query_as("SELECT id, status, error_kind, created_at, updated_at FROM invocations")
        .fetch_all(&mut conn)
        .await
        .expect("invocations");
    let hist: Vec<HistRow> =
        sqlx::query_as("SELECT invocation_id, status, attempt FROM invocation_history ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .expect("history");
    let insts: Vec<InstRow> = sqlx::query_as(
        "SELECT invocation_id, attempt, node, status, error_message, ended_at, report_by FROM task_instances",
    )
    .fetch_all(&mut conn)
    .await
    .expect("instances");
    let log = scan_logs(logs);
    let db_deadlocks: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(deadlocks), 0)::BIGINT FROM pg_stat_database WHERE datname = $1")
            .bind(database_name(db_url))
            .fetch_one(&mut conn)
            .await
            .expect("pg_stat_database");

    let mut a = Audit { acknowledged: acknowledged.len(), stored_total: invs.len(), db_deadlocks, ..Audit::default() };
    let by_id: HashMap<&str, &InvRow> = invs.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut h_of: HashMap<&str, Vec<&HistRow>> = HashMap::new();
    for h in &hist {
        h_of.entry(h.invocation_id.as_str()).or_default().push(h);
    }
    let mut i_of: HashMap<&str, BTreeMap<i64, &InstRow>> = HashMap::new();
    for i in &insts {
        i_of.entry(i.invocation_id.as_str()).or_default().insert(i.attempt, i);
    }
    let acked: BTreeSet<&str> = acknowledged.iter().map(String::as_str).collect();
    let (mut t0, mut t1) = (i64::MAX, i64::MIN);
    for id in &acked {
        let Some(inv) = by_id.get(id) else { continue };
        a.stored += 1;
        t0 = t0.min(inv.created_at);
        t1 = t1.max(inv.updated_at);
        let hs = h_of.get(id).cloned().unwrap_or_default();
        let is = i_of.get(id).cloned().unwrap_or_default();
        let success_rows = hs.iter().filter(|h| h.status == "success").count();
        let done = is.values().filter(|i| i.status == "done").count();
        let is_final =
            ["success", "failed", "cancelled", "concurrency_controlled_final"].contains(&inv.status.as_str());
        if !is_final {
            a.not_final.push(format!("{id} ({})", inv.status));
        } else if inv.status != "success" {
            let kind = inv.error_kind.clone().unwrap_or_default();
            a.false_cancelled += usize::from(kind == "cancelled");
            a.false_failures.push((id.to_string(), inv.status.clone(), kind));
        }
        if success_rows > 1 || done > 1 {
            a.multiple_successes.push(format!("{id}: {success_rows} success rows, {done} done instances"));
        } else if inv.status == "success" && success_rows == 1 && done == 1 {
            a.exactly_one_success += 1;
        }
        a.instances += is.len();
        if is.len() > 1 {
            a.reexecuted_calls += 1;
            a.reexecutions += is.len() - 1;
        }
        // History = instances.
        let h_attempts: BTreeSet<i64> = hs.iter().map(|h| h.attempt).filter(|n| *n >= 1).collect();
        let i_attempts: BTreeSet<i64> = is.keys().copied().collect();
        if h_attempts != i_attempts {
            a.history_mismatches.push(format!("{id}: attempts in history {h_attempts:?}, instances {i_attempts:?}"));
        }
        for (n, i) in &is {
            let blamed = i.status == "unknown_error"
                || i.status == "no_heartbeat"
                || i.error_message.as_deref().is_some_and(|m| m.contains("stopped reporting"));
            a.blamed_on_heartbeat += usize::from(blamed);
            if LIVE_INSTANCE.contains(&i.status.as_str()) || i.report_by.is_some() {
                a.history_mismatches.push(format!("{id} attempt {n} on {}: never ended ({})", i.node, i.status));
            } else if i.ended_at <= 0 {
                a.history_mismatches.push(format!("{id} attempt {n} on {}: {} without an end time", i.node, i.status));
            }
            let succeeded = hs.iter().any(|h| h.attempt == *n && h.status == "success");
            if succeeded != (i.status == "done") {
                a.history_mismatches.push(format!(
                    "{id} attempt {n} on {}: instance {} but history {} a success",
                    i.node,
                    i.status,
                    if succeeded { "has" } else { "lacks" }
                ));
            }
            if log.discarded.contains(&(id.to_string(), u32::try_from(*n).unwrap_or(0))) {
                if !hs.iter().any(|h| h.attempt == *n && h.status == "running") {
                    a.history_mismatches.push(format!(
                        "{id} attempt {n} on {}: ran, outcome discarded, no `running` in history",
                        i.node
                    ));
                }
                if blamed {
                    a.history_mismatches.push(format!(
                        "{id} attempt {n} on {}: ran, outcome discarded, but the instance blames a silent node ({}: {})",
                        i.node,
                        i.status,
                        i.error_message.as_deref().unwrap_or("")
                    ));
                }
            }
        }
    }
    if t1 > t0 {
        a.throughput = a.stored as f64 * 1000.0 / (t1 - t0) as f64;
    }
    a.logs = log;
    eprintln!("chaos[{scenario}]:\n{a}");
    a
}
