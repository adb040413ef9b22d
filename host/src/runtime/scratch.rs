//! Scratch space: a task with `scratch_bytes` gets, for each attempt, a fresh, empty host
//! directory (`<scratch_dir>/<invocation>-<attempt>`) preopened in the guest as `/tmp`, opened
//! through wasmtime-wasi's cap-std primitives so that nothing outside it is reachable, and
//! removed when the attempt ends, whatever its outcome (a guard removes it if the attempt is
//! dropped half-way; leftovers of a crashed daemon are removed when the runtime starts).
//!
//! wasmtime-wasi has no quota, so this module puts its own `wasi:filesystem/types` in the
//! linker, over wasmtime-wasi's: every call goes to wasmtime-wasi's implementation, and those
//! that can take disk space are first charged to the attempt's [`ScratchBudget`]. What is
//! counted: the bytes a write or `set-size` makes a file grow by (its size read with `fstat`
//! just before; a write inside the file is free), whatever a stream (`write-via-stream`,
//! `append-via-stream`) appends or writes past the end, and [`ENTRY_BYTES`] for every file,
//! directory, symbolic or hard link created. A shrink (`set-size`, `open-at` with `truncate`)
//! gives its bytes back; deleting or renaming over a file does not, since a descriptor still
//! open may keep its blocks. So the count is never below the space the attempt's files take
//! (sizes plus a block per entry), and a call that would take it past the limit fails in the
//! guest before anything is written; the host never traps for it. Calls that answer an
//! `error-code` answer `insufficient-space` (ENOSPC); a stream write fails with
//! `last-operation-failed`, whose `filesystem-error-code` is `insufficient-space` too, but
//! Rust's wasm32-wasip2 libc reports any failed stream write as EIO. Tasks without scratch space have no preopened directory, so none of their calls
//! can reach this code with a descriptor; the budget is `None` and every call passes through.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, DescriptorFlags, DescriptorStat, DescriptorType, DirectoryEntry, ErrorCode, Filesize, HostDescriptor,
    HostDirectoryEntryStream, MetadataHashValue, NewTimestamp, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, FsResult, OutputStream, Pollable, StreamError, StreamResult};

use super::InvocationInfo;
use super::ctx::TaskCtx;

/// What creating a file, directory or link costs against the budget: a block, which covers
/// its directory entry and inode, and caps the entries an attempt can create at one per
/// 4 KiB of its limit.
pub(crate) const ENTRY_BYTES: u64 = 4096;

/// Where an attempt's scratch directory is seen by the guest.
pub(crate) const GUEST_PATH: &str = "/tmp";

/// The attempt's scratch space was full; the guest sees `insufficient-space`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the attempt's scratch space of {limit} bytes is full")]
pub(crate) struct ScratchFull {
    limit: u64,
}

/// The bytes an attempt may still put in its scratch directory.
#[derive(Debug)]
pub(crate) struct ScratchBudget {
    limit: u64,
    used: AtomicU64,
}

impl ScratchBudget {
    pub(crate) fn new(limit: u64) -> Self {
        Self { limit, used: AtomicU64::new(0) }
    }

    /// Takes `bytes` from the budget, or refuses and takes nothing.
    pub(crate) fn charge(&self, bytes: u64) -> Result<(), ScratchFull> {
        if bytes == 0 {
            return Ok(());
        }
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| u.checked_add(bytes).filter(|t| *t <= self.limit))
            .map(drop)
            .map_err(|_| ScratchFull { limit: self.limit })
    }

    /// Gives `bytes` back (never below zero).
    pub(crate) fn refund(&self, bytes: u64) {
        if bytes > 0 {
            let _ = self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| Some(u.saturating_sub(bytes)));
        }
    }

    /// Bytes counted now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Empties (or creates) the directory of the attempts' scratch directories: what is there was
/// left by a daemon that did not end its attempts (a crash). The directory must be this
/// runtime's alone (the daemon's is under its locked data directory).
pub(crate) fn clean_root(root: &Path) -> io::Result<()> {
    std::fs::create_dir_all(root)?;
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// One attempt's scratch directory on the host; removed by [`ScratchDir::remove`], or when
/// dropped (an attempt cut short by a panic or a dropped future).
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: Option<PathBuf>,
}

impl ScratchDir {
    /// Makes the fresh, empty directory of this attempt under `root` (removing a stale one of
    /// the same name first).
    pub(crate) async fn create(root: &Path, info: &InvocationInfo) -> io::Result<Self> {
        let name: String = info
            .id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') { c } else { '_' })
            .collect();
        let path = root.join(format!("{name}-{}", info.attempt));
        let made = path.clone();
        tokio::task::spawn_blocking(move || {
            match std::fs::remove_dir_all(&made) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            std::fs::create_dir(&made)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(Self { path: Some(path) })
    }

    /// The directory on the host.
    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Removes the directory and all it holds, off the async threads. Tried three times: a
    /// guest interrupted in the middle of a filesystem call may leave that call finishing on a
    /// blocking thread, creating an entry while the removal runs. A failure is logged (the
    /// next start of the runtime removes what is left).
    pub(crate) async fn remove(mut self) {
        let Some(path) = self.path.take() else { return };
        for tries in 1..=3 {
            let p = path.clone();
            let r = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(p)).await.map_err(io::Error::other);
            match r.and_then(|r| r) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) if tries == 3 => {
                    tracing::warn!(error = %e, dir = %path.display(), "cannot remove a scratch directory");
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let remove = move || {
                if let Err(e) = std::fs::remove_dir_all(&path)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(error = %e, dir = %path.display(), "cannot remove a scratch directory");
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(remove)),
                Err(_) => remove(),
            }
        }
    }
}

/// The view the filesystem bindings get of a `TaskCtx`: wasmtime-wasi's, and the budget.
pub(crate) struct ScratchFs<'a> {
    fs: WasiFilesystemCtxView<'a>,
    budget: Option<Arc<ScratchBudget>>,
}

/// The [`HasData`] of [`ScratchFs`].
pub(crate) struct HasScratchFs;

impl HasData for HasScratchFs {
    type Data<'a> = ScratchFs<'a>;
}

fn view(c: &mut TaskCtx) -> ScratchFs<'_> {
    let budget = c.scratch.clone();
    ScratchFs { fs: c.filesystem(), budget }
}

/// Puts the budgeted `wasi:filesystem/types` in the linker in place of wasmtime-wasi's
/// (which `wasmtime_wasi::p2::add_to_linker_async` must have added first).
pub(crate) fn add_to_linker(linker: &mut Linker<TaskCtx>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added = types::add_to_linker::<TaskCtx, HasScratchFs>(linker, view);
    linker.allow_shadowing(false);
    added
}

/// wasmtime-wasi's implementation, which every call ends in.
type Inner<'a> = WasiFilesystemCtxView<'a>;

/// Another handle on a descriptor the guest passed (both name the same table entry).
fn again(fd: &Resource<Descriptor>) -> Resource<Descriptor> {
    Resource::new_borrow(fd.rep())
}

fn full() -> wasmtime_wasi::p2::FsError {
    ErrorCode::InsufficientSpace.into()
}

impl ScratchFs<'_> {
    /// The open file behind `fd`, if it is a file (a directory is left to wasmtime-wasi, which
    /// refuses what cannot be done to one).
    fn file(&self, fd: &Resource<Descriptor>) -> FsResult<Option<Arc<std::fs::File>>> {
        Ok(match self.fs.table.get(fd)? {
            Descriptor::File(f) => Some(f.file.clone()),
            Descriptor::Dir(_) => None,
        })
    }

    /// Charges a new entry (file, directory, link) before it is made; the budget it was
    /// charged to, for [`entry_made`].
    fn charge_entry(&self) -> FsResult<Option<Arc<ScratchBudget>>> {
        match &self.budget {
            Some(b) => {
                b.charge(ENTRY_BYTES).map_err(|_| full())?;
                Ok(Some(b.clone()))
            }
            None => Ok(None),
        }
    }
}

/// Gives a new entry's charge back if making it failed.
fn entry_made<T>(charged: Option<Arc<ScratchBudget>>, r: FsResult<T>) -> FsResult<T> {
    if let (Some(b), Err(_)) = (charged, &r) {
        b.refund(ENTRY_BYTES);
    }
    r
}

impl types::Host for ScratchFs<'_> {
    fn convert_error_code(&mut self, err: wasmtime_wasi::p2::FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.fs, err)
    }

    fn filesystem_error_code(&mut self, err: Resource<wasmtime::Error>) -> wasmtime::Result<Option<ErrorCode>> {
        if self.fs.table.get(&err)?.downcast_ref::<ScratchFull>().is_some() {
            return Ok(Some(ErrorCode::InsufficientSpace));
        }
        types::Host::filesystem_error_code(&mut self.fs, err)
    }
}

impl HostDescriptor for ScratchFs<'_> {
    async fn advise(
        &mut self,
        fd: Resource<Descriptor>,
        offset: Filesize,
        len: Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        Inner::advise(&mut self.fs, fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        Inner::sync_data(&mut self.fs, fd).await
    }

    async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorFlags> {
        Inner::get_flags(&mut self.fs, fd).await
    }

    async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorType> {
        Inner::get_type(&mut self.fs, fd).await
    }

    async fn set_size(&mut self, fd: Resource<Descriptor>, size: Filesize) -> FsResult<()> {
        let (Some(budget), Some(file)) = (self.budget.clone(), self.file(&fd)?) else {
            return Inner::set_size(&mut self.fs, fd, size).await;
        };
        let before = file.metadata()?.len();
        if size > before {
            budget.charge(size - before).map_err(|_| full())?;
            let r = Inner::set_size(&mut self.fs, fd, size).await;
            if r.is_err() {
                budget.refund(size - before);
            }
            r
        } else {
            Inner::set_size(&mut self.fs, fd, size).await?;
            budget.refund(before - size);
            Ok(())
        }
    }

    async fn set_times(&mut self, fd: Resource<Descriptor>, atim: NewTimestamp, mtim: NewTimestamp) -> FsResult<()> {
        Inner::set_times(&mut self.fs, fd, atim, mtim).await
    }

    async fn read(&mut self, fd: Resource<Descriptor>, len: Filesize, offset: Filesize) -> FsResult<(Vec<u8>, bool)> {
        Inner::read(&mut self.fs, fd, len, offset).await
    }

    async fn write(&mut self, fd: Resource<Descriptor>, buf: Vec<u8>, offset: Filesize) -> FsResult<Filesize> {
        let (Some(budget), Some(file)) = (self.budget.clone(), self.file(&fd)?) else {
            return Inner::write(&mut self.fs, fd, buf, offset).await;
        };
        let before = file.metadata()?.len();
        let growth = |len: u64| offset.saturating_add(len).saturating_sub(before);
        let charged = growth(buf.len() as u64);
        budget.charge(charged).map_err(|_| full())?;
        let r = Inner::write(&mut self.fs, fd, buf, offset).await;
        // A short write grew the file less; a failed one not at all.
        budget.refund(charged - r.as_ref().map_or(0, |n| growth(*n).min(charged)));
        r
    }

    async fn read_directory(&mut self, fd: Resource<Descriptor>) -> FsResult<Resource<types::DirectoryEntryStream>> {
        Inner::read_directory(&mut self.fs, fd).await
    }

    async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        Inner::sync(&mut self.fs, fd).await
    }

    async fn create_directory_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        let charged = self.charge_entry()?;
        entry_made(charged, Inner::create_directory_at(&mut self.fs, fd, path).await)
    }

    async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorStat> {
        Inner::stat(&mut self.fs, fd).await
    }

    async fn stat_at(&mut self, fd: Resource<Descriptor>, flags: PathFlags, path: String) -> FsResult<DescriptorStat> {
        Inner::stat_at(&mut self.fs, fd, flags, path).await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        flags: PathFlags,
        path: String,
        atim: NewTimestamp,
        mtim: NewTimestamp,
    ) -> FsResult<()> {
        Inner::set_times_at(&mut self.fs, fd, flags, path, atim, mtim).await
    }

    async fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_flags: PathFlags,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let charged = self.charge_entry()?;
        entry_made(charged, Inner::link_at(&mut self.fs, fd, old_flags, old_path, new_fd, new_path).await)
    }

    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        flags: PathFlags,
        path: String,
        oflags: OpenFlags,
        dflags: DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        let creates = oflags.contains(OpenFlags::CREATE);
        let truncates = oflags.contains(OpenFlags::TRUNCATE);
        let Some(budget) = self.budget.clone().filter(|_| creates || truncates) else {
            return Inner::open_at(&mut self.fs, fd, flags, path, oflags, dflags).await;
        };
        let before = Inner::stat_at(&mut self.fs, again(&fd), flags, path.clone()).await.ok();
        let charged = if creates && before.is_none() { ENTRY_BYTES } else { 0 };
        budget.charge(charged).map_err(|_| full())?;
        match Inner::open_at(&mut self.fs, fd, flags, path, oflags, dflags).await {
            Ok(opened) => {
                if let Some(old) = before.filter(|s| truncates && s.type_ == DescriptorType::RegularFile) {
                    budget.refund(old.size);
                }
                Ok(opened)
            }
            Err(e) => {
                budget.refund(charged);
                Err(e)
            }
        }
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        HostDescriptor::drop(&mut self.fs, fd)
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        Inner::readlink_at(&mut self.fs, fd, path).await
    }

    async fn remove_directory_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        Inner::remove_directory_at(&mut self.fs, fd, path).await
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        Inner::rename_at(&mut self.fs, fd, old_path, new_fd, new_path).await
    }

    async fn symlink_at(&mut self, fd: Resource<Descriptor>, src_path: String, dest_path: String) -> FsResult<()> {
        let charged = self.charge_entry()?;
        entry_made(charged, Inner::symlink_at(&mut self.fs, fd, src_path, dest_path).await)
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        Inner::unlink_file_at(&mut self.fs, fd, path).await
    }

    fn read_via_stream(&mut self, fd: Resource<Descriptor>, offset: Filesize) -> FsResult<Resource<DynInputStream>> {
        Inner::read_via_stream(&mut self.fs, fd, offset)
    }

    fn write_via_stream(&mut self, fd: Resource<Descriptor>, offset: Filesize) -> FsResult<Resource<DynOutputStream>> {
        self.budgeted_stream(fd, Some(offset))
    }

    fn append_via_stream(&mut self, fd: Resource<Descriptor>) -> FsResult<Resource<DynOutputStream>> {
        self.budgeted_stream(fd, None)
    }

    async fn is_same_object(&mut self, a: Resource<Descriptor>, b: Resource<Descriptor>) -> wasmtime::Result<bool> {
        Inner::is_same_object(&mut self.fs, a, b).await
    }

    async fn metadata_hash(&mut self, fd: Resource<Descriptor>) -> FsResult<MetadataHashValue> {
        Inner::metadata_hash(&mut self.fs, fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        flags: PathFlags,
        path: String,
    ) -> FsResult<MetadataHashValue> {
        Inner::metadata_hash_at(&mut self.fs, fd, flags, path).await
    }
}

impl ScratchFs<'_> {
    /// wasmtime-wasi's output stream for `fd` (at `offset`, or appending), wrapped in a
    /// [`BudgetedStream`] when the attempt has a budget.
    fn budgeted_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: Option<Filesize>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let (Some(budget), Some(file)) = (self.budget.clone(), self.file(&fd)?) else {
            return match offset {
                Some(o) => Inner::write_via_stream(&mut self.fs, fd, o),
                None => Inner::append_via_stream(&mut self.fs, fd),
            };
        };
        let stream = match offset {
            Some(o) => Inner::write_via_stream(&mut self.fs, fd, o)?,
            None => Inner::append_via_stream(&mut self.fs, fd)?,
        };
        let inner = self.fs.table.delete(stream)?;
        let wrapped: DynOutputStream = Box::new(BudgetedStream { inner, file, position: offset, budget });
        Ok(self.fs.table.push(wrapped)?)
    }
}

impl HostDirectoryEntryStream for ScratchFs<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<DirectoryEntry>> {
        Inner::read_directory_entry(&mut self.fs, stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.fs, stream)
    }
}

/// wasmtime-wasi's output stream of a file, charging each write to the budget first: at a
/// position, what it writes past the file's end (its size read just before; the stream
/// accepts a write only once the one before is done); appending, all of it.
struct BudgetedStream {
    inner: DynOutputStream,
    file: Arc<std::fs::File>,
    /// Where the next write lands; `None` when appending.
    position: Option<u64>,
    budget: Arc<ScratchBudget>,
}

impl BudgetedStream {
    /// Charges a write of `len` bytes; returns what it charged.
    fn charge(&self, len: u64) -> StreamResult<u64> {
        let growth = match self.position {
            Some(p) => {
                let size =
                    self.file.metadata().map_err(|e| StreamError::LastOperationFailed(wasmtime::Error::new(e)))?;
                p.saturating_add(len).saturating_sub(size.len())
            }
            None => len,
        };
        self.budget.charge(growth).map_err(|e| StreamError::LastOperationFailed(wasmtime::Error::new(e)))?;
        Ok(growth)
    }

    /// After a write of `len` bytes: moves the position on, or gives the charge back.
    fn settle<T>(&mut self, len: u64, charged: u64, r: StreamResult<T>) -> StreamResult<T> {
        match &r {
            Ok(_) => {
                if let Some(p) = &mut self.position {
                    *p = p.saturating_add(len);
                }
            }
            Err(_) => self.budget.refund(charged),
        }
        r
    }
}

#[async_trait::async_trait]
impl OutputStream for BudgetedStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let len = bytes.len() as u64;
        let charged = self.charge(len)?;
        let r = self.inner.write(bytes);
        self.settle(len, charged, r)
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        // wasmtime-wasi's own (one blocking write, no task spawned), once the earlier write
        // is done so that the file's size is final.
        self.inner.ready().await;
        let len = bytes.len() as u64;
        let charged = self.charge(len)?;
        let r = self.inner.blocking_write_and_flush(bytes).await;
        self.settle(len, charged, r)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await;
    }
}

#[async_trait::async_trait]
impl Pollable for BudgetedStream {
    async fn ready(&mut self) {
        self.inner.ready().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_what_would_pass_the_limit_and_takes_nothing() {
        let b = ScratchBudget::new(10_000);
        assert!(b.charge(6_000).is_ok());
        assert!(b.charge(4_001).is_err());
        assert_eq!(b.used(), 6_000);
        assert!(b.charge(4_000).is_ok());
        assert!(b.charge(1).is_err());
        assert!(b.charge(0).is_ok(), "nothing costs nothing, even when full");
        b.refund(3_000);
        assert_eq!(b.used(), 7_000);
        b.refund(u64::MAX);
        assert_eq!(b.used(), 0);
        assert!(b.charge(u64::MAX).is_err());
    }

    #[tokio::test]
    async fn a_scratch_dir_is_fresh_and_gone_after_remove_or_drop() {
        let root = tempfile::tempdir().unwrap();
        clean_root(root.path()).unwrap();
        let info =
            InvocationInfo { id: "019a.0/../x".into(), task: "t".into(), attempt: 2, parent: None, workflow: None };
        let dir = ScratchDir::create(root.path(), &info).await.unwrap();
        assert_eq!(dir.path(), root.path().join("019a.0_.._x-2"), "no path separator gets through");
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let path = dir.path().to_path_buf();
        drop(dir);
        // Dropped: removed (by a blocking task).
        let started = std::time::Instant::now();
        while path.exists() {
            assert!(started.elapsed() < std::time::Duration::from_secs(10), "a dropped scratch dir stayed");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // A stale directory of the same name is replaced by an empty one.
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("stale"), b"x").unwrap();
        let dir = ScratchDir::create(root.path(), &info).await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        dir.remove().await;
        assert!(!path.exists());
        // Leftovers of a crash are removed when a runtime starts.
        std::fs::create_dir_all(root.path().join("old-1/deep")).unwrap();
        std::fs::write(root.path().join("stray"), b"x").unwrap();
        clean_root(root.path()).unwrap();
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }
}
