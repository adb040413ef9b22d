//! The on-disk AOT cache: a compiled component is serialised to
//! `<cache_dir>/<digest>-<engine compatibility hash>.cwasm`, written atomically (a temporary
//! file, then a rename), and loaded back instead of compiling again. Only files this module
//! wrote are ever deserialised; a file that fails to load is removed and the component compiled
//! afresh.

use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Feeds a `Hash` into SHA-256, so the compatibility hash is stable across processes and Rust
/// versions (unlike `DefaultHasher`).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        0 // unused: the digest is read with `finalize`
    }
}

/// Hex digest of the engine's compatibility hash (wasmtime version, target and every setting
/// that changes compiled code): artifacts of another engine never match.
pub(crate) fn engine_hash(engine: &Engine) -> String {
    use std::hash::Hash;
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(&h.0.finalize()[..16])
}

/// The cache file of a component.
pub(crate) fn artifact_path(dir: &Path, digest: &str, engine_hash: &str) -> PathBuf {
    dir.join(format!("{digest}-{engine_hash}.cwasm"))
}

/// Loads a cached artifact; `None` if there is none or it does not load (then it is removed).
pub(crate) fn load(engine: &Engine, path: &Path) -> Option<Component> {
    if !path.is_file() {
        return None;
    }
    match deserialize(engine, path) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), "removing an unusable cache file: {}", super::classify::one_line(&e));
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), "cannot remove cache file: {e}");
            }
            None
        }
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // Read into memory rather than `deserialize_file`, which maps the file: a mapped file that
    // something truncates in place would kill the process with SIGBUS.
    let bytes = std::fs::read(path).map_err(wasmtime::Error::new)?;
    // SAFETY: `deserialize` trusts the bytes to be a wasmtime artifact; it is only safe for
    // output of `Component::serialize` by a compatible engine, unmodified since. This cache
    // directory holds only files written by `store` below, from components this process's
    // engine compiled; each is named by the SHA-256 of the component bytes and the engine's
    // compatibility hash (so another engine's artifacts are never picked up), and is written to
    // a temporary file and renamed into place, so a reader never sees a partial file. Wasmtime
    // still checks the header and the engine settings and errors on a mismatch.
    unsafe { Component::deserialize(engine, &bytes) }
}

/// Writes an artifact atomically. Failures are logged, not returned: the cache is an
/// optimisation.
pub(crate) fn store(component: &Component, path: &Path) {
    if let Err(e) = try_store(component, path) {
        tracing::warn!(path = %path.display(), "cannot write the compiled component to the cache: {e}");
    }
}

fn try_store(component: &Component, path: &Path) -> std::io::Result<()> {
    let bytes = component.serialize().map_err(|e| std::io::Error::other(super::classify::one_line(&e)))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("artifact");
    let tmp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), rand::random::<u64>()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_digest_and_engine() {
        let p = artifact_path(Path::new("/c"), "abc", "e1");
        assert_eq!(p, PathBuf::from("/c/abc-e1.cwasm"));
    }

    #[test]
    fn engine_hash_is_stable_and_distinguishes_settings() {
        let a = Engine::default();
        let b = Engine::default();
        assert_eq!(engine_hash(&a), engine_hash(&b));
        assert_eq!(engine_hash(&a).len(), 32);
        let mut cfg = wasmtime::Config::new();
        cfg.epoch_interruption(true);
        let c = Engine::new(&cfg);
        assert!(c.is_ok_and(|c| engine_hash(&c) != engine_hash(&a)));
    }

    #[test]
    fn round_trip_and_corrupt_files() {
        let dir = tempfile::tempdir();
        let Ok(dir) = dir else { return };
        let engine = Engine::default();
        let Ok(component) = Component::new(&engine, "(component)") else { unreachable!("an empty component compiles") };
        let path = artifact_path(dir.path(), "d", &engine_hash(&engine));
        assert!(load(&engine, &path).is_none());
        store(&component, &path);
        assert!(load(&engine, &path).is_some());
        std::fs::write(&path, b"garbage").ok();
        assert!(load(&engine, &path).is_none());
        assert!(!path.exists(), "a corrupt file is removed");
    }
}
