//! The store through the real filesystem, with images written by `wisp_oci::build`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use wisp_oci::build::{Entry, LayoutBuilder};
use wisp_oci::{Content, Image, ImageError, ImageStore, Imported, RunConfig};

fn file(path: &str, bytes: &str) -> Entry {
    Entry::file(path, bytes.as_bytes())
}

fn dir(path: &str) -> Entry {
    Entry::Dir { path: path.into() }
}

fn symlink(path: &str, target: &str) -> Entry {
    Entry::Symlink { path: path.into(), target: target.into() }
}

fn raw(path: &str, kind: tar::EntryType, link: &str) -> Entry {
    Entry::Raw {
        path: path.into(),
        kind,
        link: link.into(),
        bytes: if link.is_empty() { b"x".to_vec() } else { vec![] },
    }
}

fn container(imported: Imported) -> Image {
    match imported.content {
        Content::Container(img) => img,
        Content::Wasm(_) => panic!("expected a container image"),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// Nothing of a failed import is left anywhere in the store.
fn assert_empty_store(root: &Path) {
    for sub in ["rootfs", "images", "tmp", "blobs/sha256"] {
        assert!(names(&root.join(sub)).is_empty(), "{sub} not empty: {:?}", names(&root.join(sub)));
    }
}

fn base_image() -> LayoutBuilder {
    LayoutBuilder::new()
        .layer(vec![
            dir("bin"),
            Entry::File { path: "bin/app".into(), bytes: b"#!/bin/sh\necho hi\n".to_vec(), mode: 0o755 },
            symlink("bin/sh", "app"),
            symlink("bin/abs", "/bin/app"),
            Entry::Hardlink { path: "bin/app2".into(), target: "bin/app".into() },
            Entry::File { path: "etc/secret".into(), bytes: b"s".to_vec(), mode: 0o600 },
            Entry::File { path: "usr/bin/suid".into(), bytes: b"s".to_vec(), mode: 0o4755 },
            raw("dev/null", tar::EntryType::Char, ""),
        ])
        .layer(vec![file("etc/motd", "hello\n"), file("bin/app", "#!/bin/sh\necho v2\n")])
        .config(RunConfig {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["exec /bin/app".into()],
            env: vec!["PORT=8080".into(), "PATH=/bin".into()],
            working_dir: Some("/srv".into()),
            user: Some("1000:1000".into()),
            exposed_ports: vec!["8080/tcp".into(), "9090/udp".into()],
            stop_signal: Some("SIGINT".into()),
        })
}

fn check_base_rootfs(img: &Image, store_root: &Path) {
    let r = &img.rootfs;
    assert!(r.is_absolute());
    assert_eq!(*r, store_root.canonicalize().unwrap().join("rootfs").join(&img.manifest_hex));
    // The second layer replaced bin/app; the hard link made in layer 0 keeps the old inode.
    assert_eq!(fs::read_to_string(r.join("bin/app")).unwrap(), "#!/bin/sh\necho v2\n");
    assert_eq!(fs::read_to_string(r.join("bin/app2")).unwrap(), "#!/bin/sh\necho hi\n");
    assert_eq!(fs::metadata(r.join("bin/app")).unwrap().permissions().mode() & 0o7777, 0o644);
    assert_eq!(fs::metadata(r.join("bin/app2")).unwrap().permissions().mode() & 0o7777, 0o755);
    assert_eq!(fs::metadata(r.join("etc/secret")).unwrap().permissions().mode() & 0o7777, 0o600);
    assert_eq!(fs::metadata(r.join("usr/bin/suid")).unwrap().permissions().mode() & 0o7777, 0o4755);
    assert_eq!(fs::read_link(r.join("bin/sh")).unwrap(), Path::new("app"));
    assert_eq!(fs::read_link(r.join("bin/abs")).unwrap(), Path::new("/bin/app"));
    assert_eq!(fs::read_to_string(r.join("etc/motd")).unwrap(), "hello\n");
    assert!(fs::symlink_metadata(r.join("dev/null")).is_err(), "device nodes are skipped");
    assert_eq!(fs::metadata(r.join("etc/motd")).unwrap().uid(), 0);
    let c = &img.config;
    assert_eq!(c.args(), vec!["/bin/sh", "-c", "exec /bin/app"]);
    assert_eq!(c.env, vec!["PORT=8080", "PATH=/bin"]);
    assert_eq!(c.working_dir.as_deref(), Some("/srv"));
    assert_eq!(c.user.as_deref(), Some("1000:1000"));
    assert_eq!(c.exposed_ports, vec!["8080/tcp", "9090/udp"]);
    assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(img.blobs.len(), 4, "manifest, config, two layers");
    assert_eq!(img.blobs[0], img.manifest_hex);
    let blob_sizes: u64 =
        img.blobs[1..].iter().map(|b| fs::metadata(store_root.join("blobs/sha256").join(b)).unwrap().len()).sum();
    assert_eq!(img.size, blob_sizes);
}

#[test]
fn import_from_dir_unpacks_rootfs_and_records_image() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let want = base_image().gzip(true).ref_name("latest").write_dir(&layout).unwrap();
    let store = ImageStore::open(&t.path().join("store")).unwrap();
    let imported = store.import(&layout, None).unwrap();
    assert_eq!(imported.manifest_hex, want);
    assert_eq!(imported.ref_name.as_deref(), Some("latest"));
    let img = container(imported);
    check_base_rootfs(&img, &t.path().join("store"));
    assert_eq!(store.image(&want).unwrap(), img);
    assert_eq!(store.list().unwrap(), vec![img.clone()]);
    assert!(names(&t.path().join("store/tmp")).is_empty());

    // The store keeps its own blobs: the source can go.
    fs::remove_dir_all(&layout).unwrap();
    for b in &img.blobs {
        assert!(t.path().join("store/blobs/sha256").join(b).is_file());
    }
    // And it survives reopening.
    drop(store);
    let store = ImageStore::open(&t.path().join("store")).unwrap();
    assert_eq!(store.list().unwrap(), vec![img]);
}

#[test]
fn import_from_archive_plain_and_gzip() {
    let t = tempfile::tempdir().unwrap();
    let tar_path = t.path().join("img.tar");
    let want = base_image().write_archive(&tar_path).unwrap();

    let store = ImageStore::open(&t.path().join("s1")).unwrap();
    let img = container(store.import(&tar_path, None).unwrap());
    assert_eq!(img.manifest_hex, want);
    check_base_rootfs(&img, &t.path().join("s1"));
    assert!(names(&t.path().join("s1/tmp")).is_empty(), "extracted archive removed");

    let gz_path = t.path().join("img.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(fs::File::create(&gz_path).unwrap(), flate2::Compression::fast());
    gz.write_all(&fs::read(&tar_path).unwrap()).unwrap();
    gz.finish().unwrap();
    let store2 = ImageStore::open(&t.path().join("s2")).unwrap();
    let img2 = container(store2.import(&gz_path, None).unwrap());
    assert_eq!(img2.manifest_hex, want);
    check_base_rootfs(&img2, &t.path().join("s2"));

    let zst_path = t.path().join("img.tar.zst");
    fs::write(&zst_path, zstd::encode_all(fs::read(&tar_path).unwrap().as_slice(), 3).unwrap()).unwrap();
    let store3 = ImageStore::open(&t.path().join("s3")).unwrap();
    assert_eq!(container(store3.import(&zst_path, None).unwrap()).manifest_hex, want);
}

#[test]
fn whiteouts_and_opaque_whiteouts() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    LayoutBuilder::new()
        .layer(vec![
            file("a/x", "x"),
            file("a/y", "y"),
            file("d/old", "old"),
            file("d/sub/deep", "deep"),
            file("gone/f", "f"),
            file("keep", "k"),
        ])
        .layer(vec![
            Entry::Whiteout { path: "a/x".into() },
            Entry::Whiteout { path: "gone".into() },
            file("d/new", "new"),
            dir("d/sub"),
            file("d/sub/newer", "newer"),
            // After this layer's own entries in d: those stay, the lower ones go.
            Entry::Opaque { dir: "d".into() },
            // A whiteout of something this same layer added does not apply.
            file("e/mine", "m"),
            Entry::Whiteout { path: "e/mine".into() },
        ])
        .write_dir(&layout)
        .unwrap();
    let store = ImageStore::open(&t.path().join("store")).unwrap();
    let r = container(store.import(&layout, None).unwrap()).rootfs;
    assert!(!r.join("a/x").exists());
    assert!(r.join("a/y").exists());
    assert!(!r.join("gone").exists());
    assert!(r.join("keep").exists());
    assert_eq!(names(&r.join("d")), vec!["new", "sub"]);
    assert_eq!(names(&r.join("d/sub")), vec!["newer"]);
    assert!(r.join("e/mine").exists());
    assert!(!r.join("a/.wh.x").exists() && !r.join("d/.wh..wh..opq").exists());
}

#[test]
fn replacing_entries() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    LayoutBuilder::new()
        .layer(vec![file("p/f", "1"), file("q", "file"), symlink("s", "/nowhere"), file("d/kept", "k")])
        .layer(vec![file("p", "now a file"), dir("q"), file("q/in", "i"), file("s", "not a link"), dir("d")])
        .write_dir(&layout)
        .unwrap();
    let store = ImageStore::open(&t.path().join("store")).unwrap();
    let r = container(store.import(&layout, None).unwrap()).rootfs;
    assert_eq!(fs::read_to_string(r.join("p")).unwrap(), "now a file");
    assert_eq!(fs::read_to_string(r.join("q/in")).unwrap(), "i");
    assert!(fs::symlink_metadata(r.join("s")).unwrap().is_file());
    assert!(r.join("d/kept").exists(), "a dir over a dir keeps its content");
}

#[test]
fn reimport_is_idempotent_and_does_not_unpack_again() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    base_image().write_dir(&layout).unwrap();
    let store = ImageStore::open(&t.path().join("store")).unwrap();
    let first = store.import(&layout, None).unwrap();
    let img = container(first.clone());
    fs::write(img.rootfs.join("marker"), "still here").unwrap();
    let second = store.import(&layout, None).unwrap();
    assert_eq!(first, second);
    assert!(img.rootfs.join("marker").exists(), "rootfs was not unpacked again");
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn corrupt_blob_is_refused_and_store_unchanged() {
    let t = tempfile::tempdir().unwrap();
    for gzip in [false, true] {
        let layout = t.path().join(format!("layout-{gzip}"));
        base_image().gzip(gzip).corrupt_layer(1).write_dir(&layout).unwrap();
        let root = t.path().join(format!("store-{gzip}"));
        let store = ImageStore::open(&root).unwrap();
        let err = store.import(&layout, None).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("(layer 1): digest mismatch, content hashes to sha256:"), "{msg}");
        assert_empty_store(&root);
    }
}

#[test]
fn diff_id_mismatch_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    base_image().gzip(true).wrong_diff_id(0).write_dir(&layout).unwrap();
    let root = t.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    let err = store.import(&layout, None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("layer 0 (sha256:"), "{msg}");
    assert!(msg.contains("diff id mismatch: config rootfs.diff_ids[0] is sha256:"), "{msg}");
    assert_empty_store(&root);
}

#[test]
fn hostile_entries_are_refused_with_the_entry_named() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let out = outside.to_str().unwrap();
    let cases: Vec<(Vec<Entry>, &str, String)> = vec![
        (
            vec![raw("../../etc/passwd", tar::EntryType::Regular, "")],
            "../../etc/passwd",
            "path escapes the rootfs".into(),
        ),
        (vec![raw("a/../../x", tar::EntryType::Regular, "")], "a/../../x", "path escapes the rootfs".into()),
        (vec![raw("/etc/passwd", tar::EntryType::Regular, "")], "/etc/passwd", "absolute path".into()),
        (vec![raw("./../x", tar::EntryType::Directory, "")], "./../x", "path escapes the rootfs".into()),
        (vec![symlink("a", out), file("a/b", "pwned")], "a/b", "goes through symlink \"a\"".into()),
        (
            vec![symlink("lnk", "../../.."), file("ok", "")],
            "lnk",
            "symlink target \"../../..\" points outside the rootfs".into(),
        ),
        (vec![symlink("x/lnk", "../y/../../z")], "x/lnk", "points outside the rootfs".into()),
        (
            vec![raw("h", tar::EntryType::Link, "../../etc/passwd")],
            "h",
            "hard link target \"../../etc/passwd\": path escapes the rootfs".into(),
        ),
        (
            vec![raw("h", tar::EntryType::Link, "/etc/passwd")],
            "h",
            "hard link target \"/etc/passwd\": absolute path".into(),
        ),
        (
            vec![symlink("a", out), raw("h", tar::EntryType::Link, "a/f")],
            "h",
            "hard link target \"a/f\": goes through symlink \"a\"".into(),
        ),
        (vec![raw("h", tar::EntryType::Link, "missing")], "h", "does not exist".into()),
        (vec![raw("..", tar::EntryType::Symlink, "x")], "..", "path escapes the rootfs".into()),
    ];
    fs::write(outside.join("f"), "outside file").unwrap();
    for (i, (entries, path, reason)) in cases.into_iter().enumerate() {
        let layout = t.path().join(format!("layout{i}"));
        // Hostile content in the second layer, over a harmless first one.
        LayoutBuilder::new().layer(vec![file("base", "b")]).layer(entries).write_dir(&layout).unwrap();
        let root = t.path().join(format!("store{i}"));
        let store = ImageStore::open(&root).unwrap();
        let err = store.import(&layout, None).unwrap_err();
        assert!(matches!(err, ImageError::BadEntry { index: 1, .. }), "case {i}: {err}");
        let msg = err.to_string();
        assert!(msg.starts_with("layer 1 (sha256:"), "case {i}: {msg}");
        assert!(msg.contains(&format!("entry {path:?}: ")), "case {i}: {msg}");
        assert!(msg.contains(&reason), "case {i}: {msg}");
        assert_empty_store(&root);
    }
    assert_eq!(names(&outside), vec!["f"], "nothing written outside");
    assert!(!t.path().join("x").exists() && !t.path().join("etc").exists());
}

#[test]
fn missing_config_and_missing_index() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let hex = base_image().omit_config().write_dir(&layout).unwrap();
    let root = t.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    let msg = store.import(&layout, None).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("manifest sha256:{hex}: missing config blob sha256:")), "{msg}");
    assert_empty_store(&root);

    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let err = store.import(&empty, None).unwrap_err();
    assert!(matches!(err, ImageError::NotALayout));
    assert!(err.to_string().contains("no index.json"), "{err}");
    assert!(err.to_string().contains("skopeo copy docker-archive:IN oci-archive:OUT"), "{err}");

    // A legacy `docker save` tar.
    let legacy = t.path().join("legacy.tar");
    let mut b = tar::Builder::new(fs::File::create(&legacy).unwrap());
    for (name, data) in [("manifest.json", &b"[]"[..]), ("abc123/layer.tar", b""), ("repositories", b"{}")] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }
    b.into_inner().unwrap();
    let err = store.import(&legacy, None).unwrap_err();
    assert!(matches!(err, ImageError::NotALayout), "{err}");

    // Anything else in an archive is named and refused.
    let odd = t.path().join("odd.tar");
    let mut b = tar::Builder::new(fs::File::create(&odd).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    b.append_data(&mut h, "./etc/passwd", &b"x"[..]).unwrap();
    b.into_inner().unwrap();
    let msg = store.import(&odd, None).unwrap_err().to_string();
    assert!(msg.starts_with("archive entry \"etc/passwd\": not part of an OCI image layout"), "{msg}");
    assert_empty_store(&root);
}

#[test]
fn wasm_layer_gives_wasm_content_and_stores_nothing() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let component = b"\0asm\x0d\0\x01\0 pretend component".to_vec();
    let hex = LayoutBuilder::new().wasm_layer(component.clone()).ref_name("v1").write_dir(&layout).unwrap();
    let root = t.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    let imported = store.import(&layout, None).unwrap();
    assert_eq!(imported.manifest_hex, hex);
    assert_eq!(imported.ref_name.as_deref(), Some("v1"));
    assert_eq!(imported.content, Content::Wasm(component));
    assert_empty_store(&root);
    assert!(matches!(store.image(&hex), Err(ImageError::NotFound(_))));
}

#[test]
fn remove_keeps_blobs_another_image_shares() {
    let t = tempfile::tempdir().unwrap();
    let shared = vec![file("lib/common.so", "shared bytes")];
    let a = LayoutBuilder::new().gzip(true).layer(shared.clone()).layer(vec![file("app", "A"), dir("ro")]);
    let b = LayoutBuilder::new().gzip(true).layer(shared).layer(vec![file("app", "B")]);
    a.write_dir(&t.path().join("a")).unwrap();
    b.write_dir(&t.path().join("b")).unwrap();
    let root = t.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    let ia = container(store.import(&t.path().join("a"), None).unwrap());
    let ib = container(store.import(&t.path().join("b"), None).unwrap());
    assert_ne!(ia.manifest_hex, ib.manifest_hex);
    assert_eq!(ia.blobs[2], ib.blobs[2], "the shared layer has one digest");
    // Read-only directories in a rootfs must not stop removal.
    fs::set_permissions(ia.rootfs.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();

    assert!(store.remove(&ia.manifest_hex).unwrap());
    assert!(!ia.rootfs.exists());
    assert!(matches!(store.image(&ia.manifest_hex), Err(ImageError::NotFound(_))));
    for blob in &ib.blobs {
        assert!(root.join("blobs/sha256").join(blob).exists(), "shared blob {blob} kept");
    }
    assert!(!root.join("blobs/sha256").join(&ia.blobs[3]).exists(), "A's own layer removed");
    assert!(!root.join("blobs/sha256").join(&ia.manifest_hex).exists());
    assert_eq!(store.list().unwrap(), vec![ib.clone()]);
    assert_eq!(fs::read_to_string(ib.rootfs.join("app")).unwrap(), "B");
    assert!(!store.remove(&ia.manifest_hex).unwrap());

    assert!(store.remove(&ib.manifest_hex).unwrap());
    assert_empty_store(&root);
}

#[test]
fn multi_image_index_needs_select() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let ha = LayoutBuilder::new().layer(vec![file("who", "a")]).ref_name("a").write_dir(&layout).unwrap();
    let hb = LayoutBuilder::new().layer(vec![file("who", "b")]).ref_name("b").write_dir(&layout).unwrap();
    let store = ImageStore::open(&t.path().join("store")).unwrap();
    let err = store.import(&layout, None).unwrap_err();
    assert!(matches!(err, ImageError::Select(_)));
    let msg = err.to_string();
    assert!(msg.contains("\"a\"") && msg.contains("\"b\""), "{msg}");
    let msg = store.import(&layout, Some("c")).unwrap_err().to_string();
    assert!(msg.contains("no image with ref name \"c\""), "{msg}");

    let ib = store.import(&layout, Some("b")).unwrap();
    assert_eq!((ib.manifest_hex.as_str(), ib.ref_name.as_deref()), (hb.as_str(), Some("b")));
    assert_eq!(fs::read_to_string(container(ib).rootfs.join("who")).unwrap(), "b");
    let ia = store.import(&layout, Some("a")).unwrap();
    assert_eq!(ia.manifest_hex, ha);
    assert_eq!(store.list().unwrap().len(), 2);
}

#[test]
fn platform_preference_and_nested_index() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    LayoutBuilder::new().layer(vec![file("arch", "arm64")]).platform("linux", "arm64").write_dir(&layout).unwrap();
    let amd = LayoutBuilder::new().layer(vec![file("arch", "amd64")]).platform("linux", "amd64");
    let want = amd.write_dir(&layout).unwrap();
    let store = ImageStore::open(&t.path().join("store")).unwrap();
    assert_eq!(store.import(&layout, None).unwrap().manifest_hex, want);

    let nested = t.path().join("nested");
    let want = LayoutBuilder::new()
        .layer(vec![file("n", "1")])
        .platform("linux", "amd64")
        .nested_index(true)
        .ref_name("multi")
        .write_dir(&nested)
        .unwrap();
    let imported = store.import(&nested, Some("multi")).unwrap();
    assert_eq!(imported.manifest_hex, want);
    assert_eq!(imported.ref_name.as_deref(), Some("multi"));
}

#[test]
fn open_clears_crash_leftovers() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    let layout = t.path().join("layout");
    base_image().write_dir(&layout).unwrap();
    let img = container(store.import(&layout, None).unwrap());
    drop(store);
    fs::create_dir_all(root.join("tmp/import-x/rootfs/a")).unwrap();
    fs::create_dir(root.join("rootfs").join("0".repeat(64))).unwrap();
    fs::write(root.join("blobs/sha256").join("1".repeat(64)), "orphan").unwrap();
    let store = ImageStore::open(&root).unwrap();
    assert!(names(&root.join("tmp")).is_empty());
    assert_eq!(names(&root.join("rootfs")), vec![img.manifest_hex.clone()]);
    assert_eq!(names(&root.join("blobs/sha256")).len(), 4);
    assert_eq!(store.list().unwrap(), vec![img]);
}
