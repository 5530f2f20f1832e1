//! Wisp's content-addressed OCI image store on a node.
//!
//! This crate owns everything between "someone handed us an image" and "here is an unpacked,
//! verified root filesystem": it imports OCI image layout directories and `oci-archive` tars
//! (plain or gzip/zstd-compressed, which includes what `docker save` writes since Docker 25),
//! verifies every blob against its sha256 digest while streaming it and every layer against the
//! config's `rootfs.diff_ids`, copies the blobs into its own store so the source may be deleted,
//! and applies the layers (whiteouts included) into one rootfs per manifest that all instances of
//! a function share read-only. Layer application refuses every entry that could write outside the
//! rootfs. Wasm artifacts (a manifest whose single layer is `application/wasm`) are recognised and
//! handed back as bytes for the caller to store.
//!
//! On disk, under the store root:
//! - `blobs/sha256/<hex>`: manifests, configs and compressed layers of imported images;
//! - `rootfs/<manifest hex>/`: the unpacked root filesystem;
//! - `images/<manifest hex>.json`: the [`Image`] metadata, written last (its presence means "complete");
//! - `tmp/`: work in progress, emptied by [`ImageStore::open`].
//!
//! The API is blocking and std-only; async callers run it in `spawn_blocking`. One process should
//! own a store root at a time ([`ImageStore::open`] clears `tmp/` and orphans).

#![warn(missing_docs)]

mod apply;
mod archive;
pub mod build;
mod error;
mod fsutil;
mod layout;
mod store;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use error::ImageError;
pub use store::ImageStore;

/// The result of [`ImageStore::import`].
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// Manifest digest, 64 lowercase hex digits.
    pub manifest_hex: String,
    /// The `org.opencontainers.image.ref.name` annotation of the chosen index entry, if any.
    pub ref_name: Option<String>,
    /// What the image holds.
    pub content: Content,
}

/// What an imported image turned out to be.
// Imports are rare and the value is short-lived; boxing would only make callers' matches noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// A Wasm artifact: the (verified) bytes of its single layer. Nothing was written to the store.
    Wasm(Vec<u8>),
    /// A container image, unpacked and recorded in the store.
    Container(Image),
}

/// A container image in the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Image {
    /// Manifest digest, 64 lowercase hex digits.
    pub manifest_hex: String,
    /// Absolute path of the unpacked root filesystem, `<root>/rootfs/<manifest_hex>`.
    pub rootfs: PathBuf,
    /// Sum of the compressed layer sizes plus the config size, in bytes.
    pub size: u64,
    /// How to run it, from the image config.
    pub config: RunConfig,
    /// Hex digests of the manifest, config and layers (what [`ImageStore::remove`] reference-counts).
    pub blobs: Vec<String>,
}

/// The parts of an image config that say how to run it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, each `"K=V"`.
    pub env: Vec<String>,
    /// `WorkingDir` (None when empty).
    pub working_dir: Option<String>,
    /// `User`, e.g. `"1000:1000"` or `"nobody"` (None when empty).
    pub user: Option<String>,
    /// `ExposedPorts`, e.g. `"8080/tcp"`, sorted.
    pub exposed_ports: Vec<String>,
    /// `StopSignal`, e.g. `"SIGTERM"`.
    pub stop_signal: Option<String>,
}

impl RunConfig {
    /// Entrypoint followed by cmd: what the container runs. Empty means the image says nothing to
    /// run; the caller reports that at deploy time.
    pub fn args(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}
