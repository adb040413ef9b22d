//! Real daemon processes for end-to-end tests: a `warden serve` child on a free port, its
//! stderr inherited or appended to a log file (so tests can count what it logged), stopped with
//! SIGKILL, SIGTERM or any other signal, and started again with the same flags.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::harness::Api;

/// The timings of the cluster tests: heartbeat every 200 ms, dead after 2 s, the services'
/// execution records abandoned after 2 s.
pub const CLUSTER_TIMINGS: [&str; 6] =
    ["--heartbeat-interval-ms", "200", "--heartbeat-timeout-ms", "2000", "--service-interval-ms", "2000"];

/// A free TCP port on 127.0.0.1 (free when asked; the daemon binds it right after).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// How to start one daemon process; kept by the process so it can be started again.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The program (`env!("CARGO_BIN_EXE_warden-under-test")` in the test binary).
    pub program: PathBuf,
    /// Its `--data-dir`.
    pub data_dir: PathBuf,
    /// Its `--database`; `None`: SQLite in the data directory.
    pub database: Option<String>,
    /// Its `--slots`.
    pub slots: u32,
    /// More flags (`--node-name`, heartbeat settings, …).
    pub args: Vec<String>,
    /// Where its stderr goes (appended, so a restarted node's lives share one file); `None`:
    /// inherited.
    pub log: Option<PathBuf>,
    /// Its `WARDEN_LOG` filter.
    pub log_filter: String,
}

impl Spec {
    /// A process of `program` on `data_dir` and `database`, 2 slots, logging warnings to the
    /// test's stderr.
    pub fn new(program: impl Into<PathBuf>, data_dir: &Path, database: Option<&str>) -> Self {
        Self {
            program: program.into(),
            data_dir: data_dir.to_path_buf(),
            database: database.map(String::from),
            slots: 2,
            args: Vec::new(),
            log: None,
            log_filter: "warn".into(),
        }
    }

    /// Adds flags.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.args.extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Sets `--slots`.
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots;
        self
    }

    /// Sets `WARDEN_LOG`.
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = filter.to_string();
        self
    }

    /// Appends stderr to `path`.
    pub fn log_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }
}

/// One `warden serve` process.
pub struct DaemonProcess {
    child: Child,
    /// A client of its API.
    pub api: Api,
    /// How it was started.
    pub spec: Spec,
}

impl DaemonProcess {
    /// Starts the process and waits up to 30 s for `/health/ready`.
    pub async fn spawn(spec: Spec) -> Self {
        let p = Self::start(spec);
        p.api.wait_ready(Duration::from_secs(30)).await;
        p
    }

    /// Starts the process without waiting for it to be ready.
    pub fn start(spec: Spec) -> Self {
        let port = free_port();
        let mut cmd = Command::new(&spec.program);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--slots", &spec.slots.to_string()])
            .args(&spec.args)
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .env_remove("WARDEN_DATABASE_URL")
            .env("WARDEN_LOG", &spec.log_filter)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null());
        match &spec.log {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()));
                cmd.stderr(file);
            }
            None => {
                cmd.stderr(Stdio::inherit());
            }
        }
        if let Some(url) = &spec.database {
            cmd.args(["--database", url]);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", spec.program.display()));
        let api = Api::new(&format!("http://127.0.0.1:{port}"));
        Self { child, api, spec }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it with SIGKILL and reaps it; returns how to start it again.
    pub fn sigkill(mut self) -> Spec {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
        self.spec.clone()
    }

    /// Sends a signal (`STOP`, `CONT`, …) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().expect("kill");
        assert!(ok.success(), "kill -{sig}");
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn sigterm(mut self) -> ExitStatus {
        self.signal("TERM");
        self.child.wait().expect("reap")
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
