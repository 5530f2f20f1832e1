//! Applying layer tars onto a rootfs directory, safely.
//!
//! The rootfs is a private directory under the store's tmp/ that only this code writes, so
//! checking each path component with `symlink_metadata` before creating anything is enough to
//! guarantee nothing lands outside it: entries with `..` or absolute paths are refused, parents
//! are never followed through symlinks, files are created with `O_EXCL` after removing whatever
//! was there, and symlinks are created but never followed.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use tar::EntryType;

use crate::error::ImageError;
use crate::fsutil::remove_tree;

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Applies layers in order onto one rootfs.
pub(crate) struct Applier {
    root: PathBuf,
    /// Directory modes, applied once all layers are in: a read-only directory must stay writable
    /// while later entries land in it (which matters when not running as root).
    dir_modes: BTreeMap<PathBuf, u32>,
}

/// Why an entry was refused; becomes [`ImageError::BadEntry`].
type Refusal = String;

fn io_refusal(what: &str, e: io::Error) -> Refusal {
    format!("{what}: {e}")
}

/// Turns a tar path into a path relative to the rootfs: strips `./`, refuses `..` and absolute
/// paths. `None` is the rootfs itself.
fn sanitize(raw: &[u8]) -> Result<Option<PathBuf>, Refusal> {
    if raw.starts_with(b"/") {
        return Err("absolute path".into());
    }
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir => return Err("path escapes the rootfs".into()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// True if a relative symlink target, resolved lexically from the link's directory, climbs above
/// the rootfs. Absolute targets resolve inside the container's root at run time, so they are fine.
fn symlink_escapes(link: &Path, target: &[u8]) -> bool {
    if target.starts_with(b"/") {
        return false;
    }
    let mut depth = link.parent().map_or(0, |p| p.components().count()) as i64;
    for c in Path::new(OsStr::from_bytes(target)).components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    false
}

fn shown(p: &Path) -> String {
    format!("{:?}", p.to_string_lossy())
}

/// Chown, ignoring EPERM: as root (production) it always works; unprivileged (tests) we keep our own ids.
fn chown_best_effort(res: io::Result<()>) -> io::Result<()> {
    match res {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        r => r,
    }
}

impl Applier {
    pub(crate) fn new(root: PathBuf) -> Self {
        Applier { root, dir_modes: BTreeMap::new() }
    }

    /// Walks every component of `rel` (inclusive) refusing symlinks and non-directories. Missing
    /// directories are created (and recorded in `added`) when `create`, else the walk stops and
    /// returns false ("does not exist").
    fn walk_dirs(&self, rel: &Path, create: Option<&mut HashSet<PathBuf>>) -> Result<bool, Refusal> {
        let mut added = create;
        let mut cur = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            let full = self.root.join(&cur);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.file_type().is_symlink() => return Err(format!("goes through symlink {}", shown(&cur))),
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(format!("parent {} is not a directory", shown(&cur))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => match added.as_deref_mut() {
                    Some(added) => {
                        DirBuilder::new()
                            .mode(0o755)
                            .create(&full)
                            .map_err(|e| io_refusal(&format!("create parent {}", shown(&cur)), e))?;
                        added.insert(cur.clone());
                    }
                    None => return Ok(false),
                },
                Err(e) => return Err(io_refusal(&format!("inspect {}", shown(&cur)), e)),
            }
        }
        Ok(true)
    }

    /// Applies one layer's tar stream. `index` and `digest` only name the layer in errors.
    pub(crate) fn apply_layer<R: Read>(&mut self, index: usize, digest: &str, reader: R) -> Result<R, ImageError> {
        let bad_layer = |e: io::Error| ImageError::BadLayer { index, digest: digest.into(), reason: e.to_string() };
        let mut archive = tar::Archive::new(reader);
        // Paths this layer created (with their ancestors): whiteouts only hide lower layers' content.
        let mut added: HashSet<PathBuf> = HashSet::new();
        for entry in archive.entries().map_err(bad_layer)? {
            let mut entry = entry.map_err(bad_layer)?;
            let raw = entry.path_bytes().into_owned();
            self.apply_entry(&mut entry, &raw, &mut added).map_err(|reason| ImageError::BadEntry {
                index,
                digest: digest.into(),
                path: String::from_utf8_lossy(&raw).into_owned(),
                reason,
            })?;
        }
        Ok(archive.into_inner())
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
        added: &mut HashSet<PathBuf>,
    ) -> Result<(), Refusal> {
        let kind = entry.header().entry_type();
        let rel = sanitize(raw)?;
        let Some(rel) = rel else {
            // "./" itself: the rootfs root keeps its own mode and owner.
            return match kind {
                EntryType::Directory => Ok(()),
                _ => Err("not a directory but names the rootfs itself".into()),
            };
        };
        let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        if name.starts_with(WHITEOUT.as_bytes()) {
            return self.whiteout(&rel, &parent, &name[WHITEOUT.len()..], added);
        }
        let header = entry.header();
        let mode = header.mode().map_err(|e| io_refusal("bad mode", e))? & 0o7777;
        let uid = header.uid().map_err(|e| io_refusal("bad uid", e))? as u32;
        let gid = header.gid().map_err(|e| io_refusal("bad gid", e))? as u32;
        let mtime = header.mtime().unwrap_or(0);
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {}
            EntryType::Directory | EntryType::Symlink | EntryType::Link => {}
            // crun provides /dev; devices and fifos in images are dropped.
            EntryType::Char | EntryType::Block | EntryType::Fifo => return Ok(()),
            // Metadata records the tar crate did not fold into the next entry: nothing to write.
            _ => return Ok(()),
        }
        self.walk_dirs(&parent, Some(added))?;
        let full = self.root.join(&rel);
        match kind {
            EntryType::Directory => {
                let existing = fs::symlink_metadata(&full);
                if !existing.as_ref().is_ok_and(|m| m.is_dir()) {
                    if existing.is_ok() {
                        remove_tree(&full).map_err(|e| io_refusal("remove existing", e))?;
                    }
                    DirBuilder::new().mode(0o755).create(&full).map_err(|e| io_refusal("create dir", e))?;
                }
                chown_best_effort(std::os::unix::fs::lchown(&full, Some(uid), Some(gid)))
                    .map_err(|e| io_refusal("chown", e))?;
                self.dir_modes.insert(rel.clone(), mode);
            }
            EntryType::Symlink => {
                let target = link.ok_or("symlink without a target")?;
                if symlink_escapes(&rel, &target) {
                    return Err(format!(
                        "symlink target {:?} points outside the rootfs",
                        String::from_utf8_lossy(&target)
                    ));
                }
                remove_tree(&full).map_err(|e| io_refusal("remove existing", e))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &full)
                    .map_err(|e| io_refusal("create symlink", e))?;
                chown_best_effort(std::os::unix::fs::lchown(&full, Some(uid), Some(gid)))
                    .map_err(|e| io_refusal("chown", e))?;
            }
            EntryType::Link => {
                let target = link.ok_or("hard link without a target")?;
                let shown_target = String::from_utf8_lossy(&target).into_owned();
                let refuse = |why: String| format!("hard link target {shown_target:?}: {why}");
                let trel = sanitize(&target).map_err(refuse)?.ok_or_else(|| refuse("is the rootfs itself".into()))?;
                if trel == rel {
                    return Err(refuse("links to itself".into()));
                }
                let tparent = trel.parent().unwrap_or(Path::new(""));
                if !self.walk_dirs(tparent, None).map_err(refuse)? {
                    return Err(refuse("does not exist".into()));
                }
                let tfull = self.root.join(&trel);
                match fs::symlink_metadata(&tfull) {
                    Ok(m) if m.is_dir() => return Err(refuse("is a directory".into())),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(refuse("does not exist".into())),
                    Err(e) => return Err(refuse(e.to_string())),
                }
                remove_tree(&full).map_err(|e| io_refusal("remove existing", e))?;
                // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
                fs::hard_link(&tfull, &full).map_err(|e| io_refusal("create hard link", e))?;
            }
            _ => {
                remove_tree(&full).map_err(|e| io_refusal("remove existing", e))?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&full)
                    .map_err(|e| io_refusal("create file", e))?;
                io::copy(entry, &mut f).map_err(|e| io_refusal("write file", e))?;
                // chown before chmod: chown clears setuid/setgid bits.
                chown_best_effort(std::os::unix::fs::fchown(&f, Some(uid), Some(gid)))
                    .map_err(|e| io_refusal("chown", e))?;
                f.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| io_refusal("chmod", e))?;
                let _ = f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime));
            }
        }
        added.insert(rel);
        Ok(())
    }

    fn whiteout(
        &mut self,
        rel: &Path,
        parent: &Path,
        name: &[u8],
        added: &mut HashSet<PathBuf>,
    ) -> Result<(), Refusal> {
        if rel.file_name().is_some_and(|n| n.as_bytes() == OPAQUE.as_bytes()) {
            if self.walk_dirs(parent, None)? {
                self.clear_lower(parent, added).map_err(|e| io_refusal("opaque whiteout", e))?;
            }
            return Ok(());
        }
        if name.starts_with(WHITEOUT.as_bytes()) {
            // Other aufs metadata (.wh..wh.plnk, ...): not content.
            return Ok(());
        }
        if name.is_empty() || name == b"." || name == b".." {
            return Err("invalid whiteout name".into());
        }
        if !self.walk_dirs(parent, None)? {
            return Ok(());
        }
        let target = parent.join(OsStr::from_bytes(name));
        if !added.contains(&target) {
            remove_tree(&self.root.join(&target)).map_err(|e| io_refusal("whiteout", e))?;
        }
        Ok(())
    }

    /// Removes what lower layers put under `dir`, keeping what this layer added (recursing into
    /// directories this layer re-declared, whose lower children are hidden too).
    fn clear_lower(&self, dir: &Path, added: &HashSet<PathBuf>) -> io::Result<()> {
        for e in fs::read_dir(self.root.join(dir))? {
            let e = e?;
            let rel = dir.join(e.file_name());
            if !added.contains(&rel) {
                remove_tree(&e.path())?;
            } else if e.file_type()?.is_dir() {
                self.clear_lower(&rel, added)?;
            }
        }
        Ok(())
    }

    /// Applies the recorded directory modes, deepest first.
    pub(crate) fn finish(self) -> Result<(), ImageError> {
        for (rel, mode) in self.dir_modes.iter().rev() {
            let full = self.root.join(rel);
            // A later layer may have replaced or removed it; chmod must not follow a symlink.
            if fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
                fs::set_permissions(&full, fs::Permissions::from_mode(*mode))
                    .map_err(|e| ImageError::io_path("chmod", &full, e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_paths() {
        assert_eq!(sanitize(b"./a/b").unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(sanitize(b"./").unwrap(), None);
        assert_eq!(sanitize(b"a/./b/").unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(sanitize(b"/etc/passwd").unwrap_err(), "absolute path");
        assert_eq!(sanitize(b"a/../b").unwrap_err(), "path escapes the rootfs");
    }

    #[test]
    fn symlink_targets() {
        assert!(!symlink_escapes(Path::new("a/b"), b"../c"));
        assert!(symlink_escapes(Path::new("a/b"), b"../../c"));
        assert!(symlink_escapes(Path::new("lnk"), b"../../.."));
        assert!(!symlink_escapes(Path::new("lnk"), b"/etc/passwd"));
        assert!(!symlink_escapes(Path::new("a/lnk"), b"x/../../y"));
        assert!(symlink_escapes(Path::new("a/lnk"), b"x/../../../y"));
    }
}
