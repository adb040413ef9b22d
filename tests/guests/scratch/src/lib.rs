//! One task, `scratch`, that uses the attempt's temporary directory the way a program would
//! (`std::fs` on `$TMPDIR`, falling back to `/tmp`) and reports what it saw, so the tests can
//! check that the host gives each attempt a fresh, empty directory and holds it to its limit.
//!
//! Arguments (all optional): `file` (name, default `data`), `bytes` (written to the file, then
//! read back), `again` (after that write, successful or not, the file is created again, which
//! truncates it, and this many bytes are written), `hold_ms` (a sleep at the end, so that a
//! test can look at the host's side while the attempt runs), `fail_attempts` (attempts up to
//! this number fail retryably after all that, leaving their files behind). It answers `{"tmpdir", "before"
//! (the directory's entries at the start, or the error listing it), "error" (of the first
//! write or read, as the guest saw it), "read" (bytes read back, equal to those written),
//! "again_error"}`; it never fails, so the errors it met are in its result.

use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use warden_guest::TaskError;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Args {
    file: Option<String>,
    bytes: Option<usize>,
    again: Option<usize>,
    dirs: usize,
    set_len: Option<u64>,
    seek_write: Option<u64>,
    hold_ms: u64,
    fail_attempts: u32,
}

/// `bytes` bytes of a pattern that a misplaced offset would show.
fn pattern(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| (i % 251) as u8).collect()
}

/// Writes the file and reads it back; the error as the guest sees it.
fn write_and_read(path: &str, bytes: usize) -> Result<usize, String> {
    let data = pattern(bytes);
    let mut f = std::fs::File::create(path).map_err(|e| format!("create: {e}"))?;
    f.write_all(&data).map_err(|e| format!("write: {e}"))?;
    f.flush().map_err(|e| format!("flush: {e}"))?;
    drop(f);
    let back = std::fs::read(path).map_err(|e| format!("read: {e}"))?;
    if back != data {
        return Err(format!("read back {} bytes that differ from the {} written", back.len(), data.len()));
    }
    Ok(back.len())
}

fn scratch(args: Args) -> Result<Value, TaskError> {
    let tmpdir = std::env::var("TMPDIR").ok();
    let dir = tmpdir.clone().unwrap_or_else(|| "/tmp".to_string());
    let before: Value = match std::fs::read_dir(&dir) {
        Ok(entries) => {
            let mut names: Vec<String> =
                entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            json!(names)
        }
        Err(e) => json!({"error": e.to_string()}),
    };
    let path = format!("{dir}/{}", args.file.as_deref().unwrap_or("data"));
    let (read, error) = match args.bytes.map(|n| write_and_read(&path, n)) {
        Some(Ok(n)) => (Some(n), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let again_error = args.again.map(|n| write_and_read(&path, n).err());
    let mut dirs_made = 0;
    let mut dirs_error = None;
    for i in 0..args.dirs {
        if let Err(e) = std::fs::create_dir(format!("{dir}/d{i}")) {
            dirs_error = Some(e.to_string());
            break;
        }
        dirs_made += 1;
    }
    let set_len_error = args.set_len.map(|n| {
        std::fs::File::create(format!("{dir}/sized")).and_then(|f| f.set_len(n)).err().map(|e| e.to_string())
    });
    let seek_write_error = args.seek_write.map(|at| {
        let write = || {
            let mut f = std::fs::File::create(format!("{dir}/sparse"))?;
            f.seek(SeekFrom::Start(at))?;
            f.write_all(&[1])?;
            f.flush()
        };
        write().err().map(|e| e.to_string())
    });
    if args.hold_ms > 0 {
        std::thread::sleep(Duration::from_millis(args.hold_ms));
    }
    let attempt = warden_guest::info().attempt;
    if attempt <= args.fail_attempts {
        return Err(TaskError::retryable(format!("attempt {attempt} fails on purpose, its files left behind")));
    }
    Ok(json!({"tmpdir": tmpdir, "before": before, "read": read, "error": error, "again_error": again_error,
        "dirs_made": dirs_made, "dirs_error": dirs_error, "set_len_error": set_len_error,
        "seek_write_error": seek_write_error}))
}

warden_guest::export_tasks! {
    scratch { description: "Writes and reads a file in its temporary directory" },
}
