//! The one error type of the store; every message names the blob, entry or field at fault.

use std::io;
use std::path::Path;

/// Why an import, lookup or removal failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A filesystem operation failed; `context` says on what.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The input has no `index.json` (or the archive is a legacy `docker save` one).
    #[error(
        "not an OCI image layout: no index.json (a legacy `docker save` archive? convert it with \
         `skopeo copy docker-archive:IN oci-archive:OUT`)"
    )]
    NotALayout,
    /// A blob's content does not hash to the digest that names it.
    #[error("blob sha256:{digest} ({what}): digest mismatch, content hashes to sha256:{actual}")]
    DigestMismatch {
        /// Expected hex digest.
        digest: String,
        /// Which blob, e.g. "layer 1" or "config".
        what: String,
        /// Hex digest of what was read.
        actual: String,
    },
    /// A blob's length differs from its descriptor's `size`.
    #[error("blob sha256:{digest} ({what}): size mismatch: descriptor says {expected} bytes, blob has {actual}")]
    SizeMismatch {
        /// Hex digest.
        digest: String,
        /// Which blob.
        what: String,
        /// Descriptor size.
        expected: u64,
        /// Bytes read.
        actual: u64,
    },
    /// A descriptor points at a blob the layout does not contain.
    #[error("{owner}: missing {what} blob {digest}")]
    MissingBlob {
        /// Who references it, e.g. "manifest sha256:..".
        owner: String,
        /// Which blob, e.g. "config".
        what: String,
        /// Full digest ("sha256:..").
        digest: String,
    },
    /// The uncompressed layer does not match the config's `rootfs.diff_ids[index]`.
    #[error(
        "layer {index} (sha256:{digest}): diff id mismatch: config rootfs.diff_ids[{index}] is {expected}, \
         layer hashes to sha256:{actual}"
    )]
    DiffIdMismatch {
        /// Layer position in the manifest.
        index: usize,
        /// Layer blob hex digest.
        digest: String,
        /// The diff id the config states.
        expected: String,
        /// Hex digest of the uncompressed stream.
        actual: String,
    },
    /// A layer entry was refused (escapes the rootfs, goes through a symlink, ...) or could not be applied.
    #[error("layer {index} (sha256:{digest}) entry {path:?}: {reason}")]
    BadEntry {
        /// Layer position in the manifest.
        index: usize,
        /// Layer blob hex digest.
        digest: String,
        /// The entry's path as written in the tar.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A layer's tar or compression stream is unreadable.
    #[error("layer {index} (sha256:{digest}): {reason}")]
    BadLayer {
        /// Layer position in the manifest.
        index: usize,
        /// Layer blob hex digest.
        digest: String,
        /// What went wrong.
        reason: String,
    },
    /// A layer (or manifest) has a media type the store does not handle.
    #[error("unsupported {what} media type {media_type:?}")]
    UnsupportedMediaType {
        /// e.g. "layer 0 (sha256:..)".
        what: String,
        /// The media type as written.
        media_type: String,
    },
    /// A JSON document (index, manifest, config, metadata) did not parse.
    #[error("{what}: invalid JSON: {source}")]
    Json {
        /// Which document.
        what: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Which image of a multi-image index to import is ambiguous or unknown.
    #[error("{0}")]
    Select(String),
    /// An `oci-archive` entry that has no place in an OCI image layout.
    #[error("archive entry {path:?}: {reason}")]
    ArchiveEntry {
        /// The entry path.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// Any other malformed input, described.
    #[error("{0}")]
    Invalid(String),
    /// No imported image has this manifest digest.
    #[error("image {0} not found")]
    NotFound(String),
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        ImageError::Io { context: context.into(), source }
    }

    pub(crate) fn io_path(what: &str, path: &Path, source: io::Error) -> Self {
        ImageError::Io { context: format!("{what} {}", path.display()), source }
    }
}

/// Adds path context to io results.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: &str, path: &Path) -> Result<T, ImageError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: &str, path: &Path) -> Result<T, ImageError> {
        self.map_err(|e| ImageError::io_path(what, path, e))
    }
}
