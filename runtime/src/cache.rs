//! Compiled components on disk, keyed by content hash + engine compatibility hash, so a node
//! restart (or a redeploy of the same bytes) loads machine code instead of compiling.

use crate::{DeployError, RuntimeError};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

pub(crate) struct CompileCache {
    dir: PathBuf,
    engine_key: String,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// How often deploys and restarts found compiled code on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

impl CompileCache {
    pub(crate) fn open(dir: &Path, engine: &Engine) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(dir)
            .map_err(|error| RuntimeError::CacheDir { path: dir.to_owned(), error })?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir: dir.to_owned(),
            engine_key: format!("{:016x}", hasher.finish()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats { hits: self.hits.load(Ordering::Relaxed), misses: self.misses.load(Ordering::Relaxed) }
    }

    /// Loads the compiled form of `bytes` (whose sha256 is `content_hash`), compiling and
    /// storing it first if needed.
    pub(crate) fn load(&self, engine: &Engine, content_hash: &str, bytes: &[u8]) -> Result<Component, DeployError> {
        let path = self.dir.join(format!("{content_hash}-{}.cwasm", self.engine_key));
        if path.exists() {
            // SAFETY: the file was written by `precompile_component` of an engine with the same
            // compatibility hash, into a directory only this node writes.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(component);
                }
                Err(e) => tracing::warn!(path = %path.display(), "ignoring unusable cache entry: {e:#}"),
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let compiled = engine.precompile_component(bytes).map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
        write_atomically(&path, &compiled).map_err(DeployError::Cache)?;
        // SAFETY: as above; we just wrote it.
        unsafe { Component::deserialize_file(engine, &path) }.map_err(|e| DeployError::Invalid(format!("{e:#}")))
    }
}

/// Writes through a temporary file and a rename so a crash never leaves a torn entry. The
/// temporary name is unique per call: concurrent deploys of the same bytes each write their own
/// and the last rename wins with identical content.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
