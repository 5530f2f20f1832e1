//! Compiled components on disk, keyed by content hash + engine compatibility hash, so a node
//! restart (or a redeploy of the same bytes) loads machine code instead of compiling.

use super::DeployError;
use super::RuntimeError;
use super::compiler::Compiler;
use sha2::{Digest, Sha256};
use std::hash::Hash;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

pub(crate) struct CompileCache {
    dir: PathBuf,
    engine_key: String,
    /// Compiles in a child process; without it, in this one.
    compiler: Option<Compiler>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// How often deploys and restarts found compiled code on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Components loaded from the cache.
    pub hits: u64,
    /// Components compiled because the cache had none.
    pub misses: u64,
}

/// Feeds `Hash` output into SHA-256: unlike `DefaultHasher`, stable across toolchains, so an
/// upgrade of Rust does not invalidate every cache entry.
struct Sha256Hasher(Sha256);

impl std::hash::Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        unreachable!("only the digest is read")
    }
}

impl CompileCache {
    pub(crate) fn open(dir: &Path, engine: &Engine, compiler: Option<Compiler>) -> Result<Self, RuntimeError> {
        let cache_dir = |error| RuntimeError::CacheDir { path: dir.to_owned(), error };
        // Only this node may write here: entries are loaded as trusted machine code.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(cache_dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            engine_key: engine_key(engine),
            compiler,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats { hits: self.hits.load(Ordering::Relaxed), misses: self.misses.load(Ordering::Relaxed) }
    }

    fn path(&self, content_hash: &str) -> PathBuf {
        self.dir.join(format!("{content_hash}-{}.cwasm", self.engine_key))
    }

    /// Loads the compiled form of `bytes` (whose sha256 is `content_hash`), compiling and
    /// storing it first if needed.
    pub(crate) fn load(&self, engine: &Engine, content_hash: &str, bytes: &[u8]) -> Result<Component, DeployError> {
        let path = self.path(content_hash);
        if path.exists() {
            // SAFETY: the file was written by `precompile_component` of an engine with the same
            // compatibility hash, into a directory created 0700 that only this node writes.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(component);
                }
                Err(e) => tracing::warn!(path = %path.display(), "ignoring unusable cache entry: {e:#}"),
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        match &self.compiler {
            Some(compiler) => compiler.compile(bytes, &path, &self.engine_key)?,
            None => {
                let compiled =
                    engine.precompile_component(bytes).map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
                write_atomically(&path, &compiled).map_err(DeployError::Cache)?;
                drop(compiled);
                // Give the compiler's freed working memory back to the OS now.
                // SAFETY: malloc_trim only releases free heap pages.
                unsafe { libc::malloc_trim(0) };
            }
        }
        // SAFETY: as above; we just wrote it.
        unsafe { Component::deserialize_file(engine, &path) }
            .map_err(|e| DeployError::CacheLoad { path: path.clone(), message: format!("{e:#}") })
    }

    /// Deletes the compiled form of a component no revision uses any more. Code already
    /// mapped stays valid until its last instance is gone.
    pub(crate) fn remove(&self, content_hash: &str) {
        let path = self.path(content_hash);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), "removing compile cache entry: {e}");
        }
    }
}

/// The engine's compatibility key: the first half of the SHA-256 of its compatibility hash.
pub(crate) fn engine_key(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..16])
}

/// Writes through a temporary file (unique per call, so concurrent deploys of the same bytes do
/// not collide) and a rename, so a crash never leaves a torn entry.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut file = tempfile::NamedTempFile::new_in(path.parent().unwrap_or(Path::new(".")))?;
    file.write_all(data)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}
