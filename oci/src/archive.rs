//! Unpacking an `oci-archive` (a tar of an OCI image layout, maybe gzip/zstd-compressed) into a
//! directory. Only the layout's own files are extracted; blobs are verified later, when read.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path};

use crate::error::{ImageError, IoContext};

const EXPECTED: &str =
    "not part of an OCI image layout (expected oci-layout, index.json, manifest.json or blobs/<alg>/<hex>)";

fn name_ok(s: &str, extra: &[u8]) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
}

/// Extracts the layout files of the archive at `path` into `dest` (an empty directory).
pub(crate) fn extract(path: &Path, dest: &Path) -> Result<(), ImageError> {
    let file = File::open(path).ctx("open", path)?;
    let mut buf = BufReader::with_capacity(256 * 1024, file);
    let magic = buf.fill_buf().ctx("read", path)?;
    let reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buf))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::Decoder::with_buffer(buf).ctx("read zstd", path)?)
    } else {
        Box::new(buf)
    };
    // The upload itself is unreadable: bad input, not a node fault (and its temp path is noise).
    let read_err = |e: io::Error| ImageError::Invalid(format!("not a readable tar archive (plain, gzip or zstd): {e}"));
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason: &str| ImageError::ArchiveEntry { path: raw.clone(), reason: reason.into() };
        let mut parts: Vec<&str> = Vec::new();
        for c in Path::new(&raw).components() {
            match c {
                Component::Normal(s) => parts.push(s.to_str().unwrap_or("\u{fffd}")),
                Component::CurDir => {}
                _ => return Err(refuse("path escapes the layout")),
            }
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() || parts.is_empty() {
            continue;
        }
        let rel = match parts.as_slice() {
            ["oci-layout"] | ["index.json"] => parts[0].to_owned(),
            // Docker's own bookkeeping beside the OCI layout (docker save, Engine 25+).
            ["manifest.json"] | ["repositories"] => continue,
            ["blobs", alg, hex] if name_ok(alg, b"+._-") && name_ok(hex, b"") => format!("blobs/{alg}/{hex}"),
            // Legacy `docker save`: <id>/layer.tar, <id>/json, <id>/VERSION.
            [_, "layer.tar" | "json" | "VERSION"] => return Err(ImageError::NotALayout),
            _ => return Err(refuse(EXPECTED)),
        };
        if !kind.is_file() && kind != tar::EntryType::Continuous {
            return Err(refuse("not a regular file"));
        }
        let out = dest.join(&rel);
        if let Some(dir) = out.parent() {
            fs::create_dir_all(dir).ctx("create", dir)?;
        }
        let mut f = File::create(&out).ctx("create", &out)?;
        io::copy(&mut entry, &mut f)
            .map_err(|e| ImageError::io(format!("extract {raw:?} from {}", path.display()), e))?;
    }
    if !dest.join("index.json").is_file() {
        return Err(ImageError::NotALayout);
    }
    Ok(())
}
