//! What the client commands print: for people (aligned tables, `key  value` blocks, times in
//! UTC with their age, durations, the status in colour on a terminal) or, with `-o json`, the
//! daemon's JSON for scripts. Writing to a closed pipe (`warden ls invocations | head`) ends
//! the program quietly, as `ls` or `grep` do. The exit codes are here too.

use std::io::{IsTerminal, Write};

use chrono::{DateTime, Utc};
use serde_json::Value;

/// How a client command prints (`-o` / `--output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// For people: tables, blocks and human times.
    #[default]
    Text,
    /// The daemon's JSON, pretty-printed, for scripts.
    Json,
}

/// The exit codes of `warden` (README, "Command line").
pub mod exit {
    /// Done; a waited call succeeded.
    pub const OK: u8 = 0;
    /// A waited call did not succeed (failed, cancelled, or still running at the timeout).
    pub const NOT_SUCCESS: u8 = 1;
    /// Bad usage or input: the command line, a file, or a request the daemon refused (4xx).
    pub const USAGE: u8 = 2;
    /// The daemon is unreachable or unavailable (no connection, timeout, 5xx).
    pub const UNREACHABLE: u8 = 3;
    /// Interrupted (Ctrl-C) while waiting; the calls keep running.
    pub const INTERRUPTED: u8 = 130;
}

/// Writes `text` to stdout; a closed pipe ends the program at once with success (the reader
/// has what it wanted), any other write error with [`exit::UNREACHABLE`]'s neighbour, 1.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let res = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    if let Err(e) = res {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(exit::OK));
        }
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// Pretty JSON, one document.
pub fn json(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

/// Whether stdout is a terminal (colour only then).
fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// A status word, in colour on a terminal: green success, red failures, yellow the rest of
/// the final ones, plain while in flight.
pub fn status(s: &str) -> String {
    if !colour() {
        return s.to_string();
    }
    let code = match s {
        "success" | "done" | "completed" => "32",
        "failed" | "error" | "error_fatal" | "unknown_error" | "resource_error" | "no_heartbeat" => "31",
        "cancelled" | "concurrency_controlled_final" | "killed" | "kill_self" => "33",
        _ => return s.to_string(),
    };
    format!("\x1b[{code}m{s}\x1b[0m")
}

/// Visible width of a cell (ANSI colour codes do not count).
fn width(s: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for c in s.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

/// An aligned table: a header row, then the rows; columns two spaces apart, the last one
/// not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(width(cell));
            }
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            s.push_str(&cell);
            if i < last {
                s.push_str(&" ".repeat(widths[i].saturating_sub(width(&cell)) + 2));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// `key  value` lines, keys aligned; rows whose value is empty are left out.
pub fn block(rows: &[(&str, String)]) -> String {
    let w = rows.iter().filter(|(_, v)| !v.is_empty()).map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows.iter().filter(|(_, v)| !v.is_empty()) {
        out.push_str(&format!("{k:<w$}  {v}\n"));
    }
    out
}

/// A time of the database clock (ms since the epoch) in UTC, to the millisecond.
pub fn time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
}

/// A time with its age now: `2026-12-06 01:58:01.123 UTC (3.2 s ago)`.
pub fn time_ago(ms: i64) -> String {
    let now = Utc::now().timestamp_millis();
    format!("{} ({} ago)", time(ms), duration(now.saturating_sub(ms)))
}

/// A time still ahead (a delayed call's start), with how far: `2026-12-24 18:00:00 UTC (in 3 h
/// 05 min)`; one already passed says how long ago.
pub fn time_ahead(ms: i64) -> String {
    let now = Utc::now().timestamp_millis();
    if ms <= now {
        return time_ago(ms);
    }
    format!("{} (in {})", time(ms), duration(ms - now))
}

/// A duration in ms for people: `850 ms`, `3.2 s`, `4 min 05 s`, `2 h 03 min`, `3 d 04 h`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {:02} s", ms / 60_000, (ms / 1000) % 60),
        3_600_000..86_400_000 => format!("{} h {:02} min", ms / 3_600_000, (ms / 60_000) % 60),
        _ => format!("{} d {:02} h", ms / 86_400_000, (ms / 3_600_000) % 24),
    }
}

/// A JSON value in one line, cut to `max` characters (`…` marks the cut).
pub fn brief(v: &Value, max: usize) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() <= max {
        return s;
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A field as text (`""` when absent or null).
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One invocation as a block: what a person asks first (status, result or error), then where
/// it comes from.
pub fn invocation(v: &Value) -> String {
    let error = if v["error"].is_null() {
        String::new()
    } else {
        format!("{}: {}", text(&v["error"]["kind"]), text(&v["error"]["message"]))
    };
    let progress = if v["progress"].is_null() {
        String::new()
    } else {
        let p = &v["progress"];
        format!("{}/{} {}", text(&p["done"]), text(&p["total"]), text(&p["message"])).trim_end().to_string()
    };
    let took = match (v["created_at"].as_i64(), v["updated_at"].as_i64(), v["status"].as_str()) {
        (Some(c), Some(u), Some("success" | "failed" | "cancelled" | "concurrency_controlled_final")) => {
            duration(u - c)
        }
        _ => String::new(),
    };
    block(&[
        ("id", text(&v["id"])),
        ("task", text(&v["task"])),
        ("status", status(&text(&v["status"]))),
        ("result", brief(&v["result"], 2_000)),
        ("error", error),
        ("progress", progress),
        ("args", brief(&v["args"], 2_000)),
        ("attempts", text(&v["attempts"])),
        ("node", text(&v["owner"])),
        ("parent", text(&v["parent"])),
        ("workflow", text(&v["workflow"])),
        ("created", v["created_at"].as_i64().map(time_ago).unwrap_or_default()),
        ("not before", v["not_before"].as_i64().map(time_ahead).unwrap_or_default()),
        ("updated", v["updated_at"].as_i64().map(time_ago).unwrap_or_default()),
        ("took", took),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(3_240), "3.2 s");
        assert_eq!(duration(245_000), "4 min 05 s");
        assert_eq!(duration(7_380_000), "2 h 03 min");
        assert_eq!(duration(273_600_000), "3 d 04 h");
        assert_eq!(duration(-5), "0 ms");
    }

    #[test]
    fn times_are_utc_to_the_millisecond() {
        assert_eq!(time(1_765_000_000_123), "2025-12-06 05:46:40.123 UTC");
    }

    #[test]
    fn tables_align_columns_and_ignore_colour_codes() {
        let t = table(
            &["ID", "STATUS", "TASK"],
            &[
                vec!["a".into(), "\x1b[32msuccess\x1b[0m".into(), "hello".into()],
                vec!["bbbb".into(), "failed".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID    STATUS   TASK\na     \x1b[32msuccess\x1b[0m  hello\nbbbb  failed   x\n");
    }

    #[test]
    fn blocks_leave_out_empty_fields_and_values_are_cut() {
        assert_eq!(
            block(&[("id", "x".into()), ("error", String::new()), ("status", "ok".into())]),
            "id      x\nstatus  ok\n"
        );
        assert_eq!(brief(&json!({"a": "0123456789"}), 8), "{\"a\":\"0…");
        assert_eq!(brief(&json!("plain"), 8), "plain");
    }

    #[test]
    fn a_time_ahead_says_how_far_and_one_passed_how_long_ago() {
        let now = Utc::now().timestamp_millis();
        let ahead = time_ahead(now + 3_600_000 + 65_000);
        assert!(ahead.ends_with("(in 1 h 01 min)"), "{ahead}");
        assert!(time_ahead(now - 5_000).ends_with("ago)"));
    }
}
