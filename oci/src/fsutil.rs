//! Small filesystem helpers: durable writes, temp dirs that clean up, tree removal.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{ImageError, IoContext};

/// A directory under the store's tmp/ that is removed when dropped unless [`TempDir::keep`] was called.
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A fresh, uniquely named directory `<parent>/<prefix>XXXX`.
    pub(crate) fn new_in(parent: &Path, prefix: &str) -> Result<TempDir, ImageError> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(parent).ctx("create temp dir in", parent)?;
        // Our own guard: tempfile's drop cannot remove trees with read-only directories.
        Ok(TempDir { path: dir.keep() })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
    }
}

/// Removes a file, symlink or directory tree without following symlinks. A tree with read-only
/// directories (possible when not running as root) is made writable first.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_dirs_writable(path);
            fs::remove_dir_all(path)
        }
    }
}

fn make_dirs_writable(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_dirs_writable(&e.path());
            }
        }
    }
}

/// Writes `bytes` to `path` atomically and durably: a temp file beside it, fsync, rename, fsync the dir.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let dir = path.parent().expect("atomic write target has a parent");
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).ctx("create temp file in", dir)?;
    tmp.write_all(bytes).ctx("write", tmp.path())?;
    tmp.as_file().sync_all().ctx("fsync", tmp.path())?;
    tmp.persist(path).map_err(|e| ImageError::io_path("rename into", path, e.error))?;
    sync_dir(dir)
}

/// Fsyncs a directory so renames into it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir).and_then(|f| f.sync_all()).ctx("fsync dir", dir)
}

/// Flushes the whole filesystem holding `path`: one call instead of an fsync per rootfs file.
pub(crate) fn sync_filesystem(path: &Path) -> Result<(), ImageError> {
    use std::os::fd::AsRawFd;
    let f = File::open(path).ctx("open", path)?;
    // SAFETY: syncfs takes a valid open descriptor, which `f` holds for the duration of the call.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc != 0 {
        return Err(ImageError::io_path("syncfs", path, io::Error::last_os_error()));
    }
    Ok(())
}

/// True if `s` is a sha256 digest in hex as the store names things (64 lowercase hex digits).
pub(crate) fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
