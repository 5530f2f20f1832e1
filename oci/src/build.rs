//! A small writer of OCI image layouts and `oci-archive` tars, for tests and tooling. It can also
//! write broken images on purpose (hostile paths, corrupt blobs, missing config).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::RunConfig;

/// One entry of a layer tar.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A regular file.
    File {
        /// Path inside the rootfs.
        path: String,
        /// Content.
        bytes: Vec<u8>,
        /// Permission bits, e.g. 0o755.
        mode: u32,
    },
    /// A directory (mode 0o755).
    Dir {
        /// Path inside the rootfs.
        path: String,
    },
    /// A symbolic link.
    Symlink {
        /// Path of the link.
        path: String,
        /// Its target, written as given.
        target: String,
    },
    /// A hard link to an earlier entry.
    Hardlink {
        /// Path of the link.
        path: String,
        /// Path of the existing file, relative to the rootfs.
        target: String,
    },
    /// A whiteout deleting `path` from lower layers (written as `dir/.wh.name`).
    Whiteout {
        /// What to delete.
        path: String,
    },
    /// An opaque whiteout hiding the lower layers' content of `dir` (`dir/.wh..wh..opq`).
    Opaque {
        /// The directory.
        dir: String,
    },
    /// An entry whose name and link name bytes go into the header unchecked (≤ 100 bytes each),
    /// to write hostile paths such as `../x` that the tar crate refuses.
    Raw {
        /// Entry name bytes.
        path: Vec<u8>,
        /// Entry type.
        kind: tar::EntryType,
        /// Link name bytes (symlinks and hard links), else empty.
        link: Vec<u8>,
        /// Content (regular files), else empty.
        bytes: Vec<u8>,
    },
}

impl Entry {
    /// A regular file with mode 0o644.
    pub fn file(path: &str, bytes: impl Into<Vec<u8>>) -> Entry {
        Entry::File { path: path.into(), bytes: bytes.into(), mode: 0o644 }
    }
}

/// Builds one image (a manifest, its config and layers) into a layout.
#[derive(Debug, Clone, Default)]
pub struct LayoutBuilder {
    layers: Vec<Vec<Entry>>,
    gzip: bool,
    config: RunConfig,
    wasm: Option<Vec<u8>>,
    ref_name: Option<String>,
    platform: Option<(String, String)>,
    nested: bool,
    corrupt_layer: Option<usize>,
    wrong_diff_id: Option<usize>,
    omit_config: bool,
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    // Fixed mtime so equal layers in different builders have equal digests.
    h.set_mtime(0);
    h
}

fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => ("", path),
    }
}

fn layer_tar(entries: &[Entry]) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            Entry::File { path, bytes, mode } => {
                let mut h = header(tar::EntryType::Regular, *mode, bytes.len() as u64);
                b.append_data(&mut h, path, bytes.as_slice())?;
            }
            Entry::Dir { path } => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                b.append_data(&mut h, path, io::empty())?;
            }
            Entry::Symlink { path, target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, path, target)?;
            }
            Entry::Hardlink { path, target } => {
                let mut h = header(tar::EntryType::Link, 0o644, 0);
                b.append_link(&mut h, path, target)?;
            }
            Entry::Whiteout { path } => {
                let (dir, name) = split(path);
                let wh = if dir.is_empty() { format!(".wh.{name}") } else { format!("{dir}/.wh.{name}") };
                b.append_data(&mut header(tar::EntryType::Regular, 0o644, 0), wh, io::empty())?;
            }
            Entry::Opaque { dir } => {
                let p = if dir.is_empty() { ".wh..wh..opq".to_owned() } else { format!("{dir}/.wh..wh..opq") };
                b.append_data(&mut header(tar::EntryType::Regular, 0o644, 0), p, io::empty())?;
            }
            Entry::Raw { path, kind, link, bytes } => {
                let mut h = header(*kind, 0o644, bytes.len() as u64);
                let old = h.as_old_mut();
                old.name[..path.len()].copy_from_slice(path);
                old.linkname[..link.len()].copy_from_slice(link);
                h.set_cksum();
                b.append(&h, bytes.as_slice())?;
            }
        }
    }
    b.into_inner()
}

/// The blobs and index entry of one built image.
struct Built {
    blobs: BTreeMap<String, Vec<u8>>,
    entry: Value,
    manifest_hex: String,
}

impl LayoutBuilder {
    /// An image with no layers and an empty config.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a layer with these entries.
    pub fn layer(mut self, entries: Vec<Entry>) -> Self {
        self.layers.push(entries);
        self
    }

    /// Gzip-compress layers (media type `...tar+gzip`).
    pub fn gzip(mut self, on: bool) -> Self {
        self.gzip = on;
        self
    }

    /// The run config written into the image config.
    pub fn config(mut self, config: RunConfig) -> Self {
        self.config = config;
        self
    }

    /// Makes this a Wasm artifact: one `application/wasm` layer with these bytes (other layers ignored).
    pub fn wasm_layer(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.wasm = Some(bytes.into());
        self
    }

    /// The `org.opencontainers.image.ref.name` annotation of its index entry.
    pub fn ref_name(mut self, name: &str) -> Self {
        self.ref_name = Some(name.into());
        self
    }

    /// The platform of its index entry, e.g. `("linux", "amd64")`.
    pub fn platform(mut self, os: &str, arch: &str) -> Self {
        self.platform = Some((os.into(), arch.into()));
        self
    }

    /// Puts the manifest behind a nested index (as multi-platform builds do).
    pub fn nested_index(mut self, on: bool) -> Self {
        self.nested = on;
        self
    }

    /// Flips a byte in layer `i`'s stored blob after its digest was taken.
    pub fn corrupt_layer(mut self, i: usize) -> Self {
        self.corrupt_layer = Some(i);
        self
    }

    /// Writes a wrong `rootfs.diff_ids[i]` into the config.
    pub fn wrong_diff_id(mut self, i: usize) -> Self {
        self.wrong_diff_id = Some(i);
        self
    }

    /// Leaves the config blob out of the layout.
    pub fn omit_config(mut self) -> Self {
        self.omit_config = true;
        self
    }

    fn build(&self) -> io::Result<Built> {
        let mut blobs = BTreeMap::new();
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        let (config_type, config_bytes);
        if let Some(wasm) = &self.wasm {
            layer_descs.push(
                json!({"mediaType": "application/wasm", "digest": format!("sha256:{}", sha(wasm)), "size": wasm.len()}),
            );
            blobs.insert(sha(wasm), wasm.clone());
            config_type = "application/vnd.wasm.config.v0+json";
            config_bytes = b"{}".to_vec();
        } else {
            for (i, entries) in self.layers.iter().enumerate() {
                let tar = layer_tar(entries)?;
                let mut diff_id = format!("sha256:{}", sha(&tar));
                if self.wrong_diff_id == Some(i) {
                    diff_id = format!("sha256:{}", sha(b"wrong"));
                }
                diff_ids.push(diff_id);
                let (media_type, mut blob) = if self.gzip {
                    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gz.write_all(&tar)?;
                    ("application/vnd.oci.image.layer.v1.tar+gzip", gz.finish()?)
                } else {
                    ("application/vnd.oci.image.layer.v1.tar", tar)
                };
                let hex = sha(&blob);
                layer_descs
                    .push(json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": blob.len()}));
                if self.corrupt_layer == Some(i) {
                    // The middle byte: in a tar it is file data or padding, so the tar still parses.
                    let mid = blob.len() / 2;
                    blob[mid] ^= 0x01;
                }
                blobs.insert(hex, blob);
            }
            let c = &self.config;
            let mut cfg = serde_json::Map::new();
            let mut put = |k: &str, v: Value| {
                cfg.insert(k.into(), v);
            };
            if !c.entrypoint.is_empty() {
                put("Entrypoint", json!(c.entrypoint));
            }
            if !c.cmd.is_empty() {
                put("Cmd", json!(c.cmd));
            }
            if !c.env.is_empty() {
                put("Env", json!(c.env));
            }
            if let Some(w) = &c.working_dir {
                put("WorkingDir", json!(w));
            }
            if let Some(u) = &c.user {
                put("User", json!(u));
            }
            if !c.exposed_ports.is_empty() {
                put("ExposedPorts", c.exposed_ports.iter().map(|p| (p.clone(), json!({}))).collect());
            }
            if let Some(s) = &c.stop_signal {
                put("StopSignal", json!(s));
            }
            let config = json!({"architecture": "amd64", "os": "linux", "config": cfg,
                "rootfs": {"type": "layers", "diff_ids": diff_ids}});
            config_type = "application/vnd.oci.image.config.v1+json";
            config_bytes = serde_json::to_vec(&config)?;
        }
        let config_hex = sha(&config_bytes);
        if !self.omit_config {
            blobs.insert(config_hex.clone(), config_bytes.clone());
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": config_type, "digest": format!("sha256:{config_hex}"), "size": config_bytes.len()},
            "layers": layer_descs,
        }))?;
        let manifest_hex = sha(&manifest);
        let mut entry = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_hex}"), "size": manifest.len()});
        if let Some((os, arch)) = &self.platform {
            entry["platform"] = json!({"os": os, "architecture": arch});
        }
        blobs.insert(manifest_hex.clone(), manifest);
        if self.nested {
            let index = serde_json::to_vec(&json!({"schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry]}))?;
            let hex = sha(&index);
            entry = json!({"mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": format!("sha256:{hex}"), "size": index.len()});
            blobs.insert(hex, index);
        }
        if let Some(name) = &self.ref_name {
            entry["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        }
        Ok(Built { blobs, entry, manifest_hex })
    }

    /// The manifest digest (hex) this builder writes.
    pub fn manifest_hex(&self) -> String {
        self.build().expect("build image").manifest_hex
    }

    /// Writes the image into the layout at `dir` (created if needed). If `dir` already holds a
    /// layout, the image is added to its `index.json`: that is how to make a multi-image index.
    /// Returns the manifest digest (hex).
    pub fn write_dir(&self, dir: &Path) -> io::Result<String> {
        let built = self.build()?;
        let blob_dir = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blob_dir)?;
        for (hex, bytes) in &built.blobs {
            fs::write(blob_dir.join(hex), bytes)?;
        }
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index_path = dir.join("index.json");
        let mut manifests = match fs::read(&index_path) {
            Ok(b) => serde_json::from_slice::<Value>(&b)?["manifests"].as_array().cloned().unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        manifests.push(built.entry);
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests});
        fs::write(index_path, serde_json::to_vec_pretty(&index)?)?;
        Ok(built.manifest_hex)
    }

    /// Writes the image as an `oci-archive` (an uncompressed tar of the layout, entries prefixed `./`
    /// as `tar -C dir -cf out .` writes them). Returns the manifest digest (hex).
    pub fn write_archive(&self, path: &Path) -> io::Result<String> {
        let built = self.build()?;
        let mut b = tar::Builder::new(fs::File::create(path)?);
        let mut add = |name: &str, bytes: &[u8]| {
            let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
            b.append_data(&mut h, name, bytes)
        };
        add("./oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [built.entry]});
        add("./index.json", &serde_json::to_vec(&index)?)?;
        // Docker 25+ writes this beside the layout; importers must ignore it.
        add("./manifest.json", b"[]")?;
        for (hex, bytes) in &built.blobs {
            add(&format!("./blobs/sha256/{hex}"), bytes)?;
        }
        b.into_inner()?.sync_all()?;
        Ok(built.manifest_hex)
    }
}
