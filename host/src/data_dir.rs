//! The data directory's lock: one daemon per `--data-dir`. A daemon holds an exclusive
//! advisory lock on `<data_dir>/warden.lock` (with its PID written in the file) for its whole
//! life; a second daemon on the same directory exits at once, naming the holder's PID, instead
//! of starting and fighting the first over the leader lease. The kernel releases the lock when
//! the holder exits, however it exits (SIGKILL included), so a stale file never blocks a start.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "warden.lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "data directory {dir} is in use by another warden daemon ({holder}, holding {file}); stop it, or give this \
         daemon its own --data-dir"
    )]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// The lock file.
        file: PathBuf,
        /// `pid N` as the holder wrote it, or why it is unknown.
        holder: String,
    },
    /// The file could not be created, locked or written.
    #[error("cannot lock the data directory with {file}: {source}")]
    Io {
        /// The lock file.
        file: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The lock, held until dropped (or the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Creates the directory if needed and takes its lock without waiting, writing this
    /// process's PID into the lock file; `LockError::Held` names the holder's PID.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io { file: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        // Not truncated on open: the holder's PID must survive a refused attempt.
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let holder = match file.read_to_string(&mut text) {
                    Ok(_) if !text.trim().is_empty() => format!("pid {}", text.trim()),
                    Ok(_) => "pid not yet written".to_string(),
                    Err(e) => format!("pid unreadable: {e}"),
                };
                return Err(LockError::Held { dir: dir.to_path_buf(), file: path, holder });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let first = DataDirLock::acquire(&data).expect("first");
        assert_eq!(std::fs::read_to_string(data.join(LOCK_FILE)).expect("read").trim(), std::process::id().to_string());
        let err = DataDirLock::acquire(&data).expect_err("second");
        let msg = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{msg}");
        assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        assert!(msg.contains("--data-dir"), "{msg}");
        drop(first);
        DataDirLock::acquire(&data).expect("free again");
    }
}
