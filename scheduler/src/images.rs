//! Container images on the node: importing OCI archives and layouts into the image store
//! (a Wasm image becomes a component, anything else a container image), the tags pointing at
//! them, and what a revision of a container image asks of its replicas.

use crate::store::ArtifactRef;
use crate::{Artifact, Scheduler, SchedulerError, Settings, now_ms, validate_name};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wisp_oci::{Content, Image};
use wisp_runtime::container::ContainerSpec;

/// The field an image problem is reported on.
pub(crate) const IMAGE_FIELD: &str = "spec.template.spec.containers[0].image";

/// The port a container listens on unless told otherwise (Knative's default).
pub const DEFAULT_PORT: u16 = 8080;

impl Scheduler {
    /// Imports an OCI image layout directory or `oci-archive` at `path` (on the node) and tags
    /// it `name:tag` (default: the image's own ref name, else the file's stem; tag `latest`).
    /// A Wasm image (one `application/wasm` layer) is stored as a component.
    pub async fn import_image(
        &self,
        path: PathBuf,
        name: Option<String>,
        tag: Option<String>,
    ) -> Result<ArtifactRef, SchedulerError> {
        let inner = self.inner.clone();
        let imported = tokio::task::spawn_blocking(move || inner.images.import(&path, None)).await??;
        let (default_name, default_tag) = match imported.ref_name.as_deref().map(|r| r.rsplit_once(':')) {
            Some(Some((n, t))) => (Some(n.to_string()), Some(t.to_string())),
            Some(None) => (None, imported.ref_name.clone()),
            None => (None, None),
        };
        let name = name.or(default_name).ok_or_else(|| SchedulerError::InvalidField {
            field: "name".into(),
            message: "the image names no repository: give one (wisp image import PATH --name NAME[:TAG])".into(),
        })?;
        let tag = tag.or(default_tag).unwrap_or_else(|| "latest".to_string());
        crate::services::validate_tag(&tag)?;
        validate_name(&name)?;
        let artifact = match imported.content {
            Content::Wasm(bytes) => self.put_component(bytes.into()).await?.0,
            Content::Container(image) => Artifact::Image { sha256: image.manifest_hex.clone(), bytes: image.size },
        };
        let pushed = ArtifactRef { name, tag, artifact, created_at_ms: now_ms() };
        let (inner, stored) = (self.inner.clone(), pushed.clone());
        tokio::task::spawn_blocking(move || inner.store.put_artifact(&stored)).await??;
        Ok(pushed)
    }

    /// Removes the tag `name:tag`; the content goes too when nothing else (another tag, a
    /// revision) uses it. Returns whether the tag existed.
    pub async fn remove_image(&self, name: &str, tag: &str) -> Result<bool, SchedulerError> {
        let _admin = self.inner.admin.lock().await;
        let inner = self.inner.clone();
        let (name, tag) = (name.to_string(), tag.to_string());
        tokio::task::spawn_blocking(move || {
            let Some(unused) = inner.store.delete_artifact(&name, &tag)? else { return Ok(false) };
            for artifact in unused {
                inner.remove_content(&artifact);
            }
            Ok(true)
        })
        .await?
    }

    /// A container image in the store, by manifest digest, checked to start with `settings`,
    /// with the uid and gid its user resolved to. The checks read the rootfs: off the async
    /// workers, and once, not per replica.
    pub(crate) async fn container_image(
        &self,
        sha256: &str,
        settings: &Settings,
    ) -> Result<(Arc<Image>, (u32, u32)), SchedulerError> {
        let (inner, hex, settings) = (self.inner.clone(), sha256.to_string(), settings.clone());
        tokio::task::spawn_blocking(move || {
            let image = inner.images.image(&hex)?;
            let user = check_runnable(&image, &settings)?;
            Ok((Arc::new(image), user))
        })
        .await?
    }
}

impl crate::Inner {
    /// Deletes content nothing refers to any more. Blocking.
    pub(crate) fn remove_content(&self, artifact: &Artifact) {
        match artifact {
            Artifact::Wasm { sha256, .. } => {
                self.store.remove_component(sha256);
                self.runtime.forget(sha256);
            }
            Artifact::Image { sha256, .. } => {
                if let Err(e) = self.images.remove(sha256) {
                    tracing::warn!(image = %sha256, "removing an unused image: {e}");
                }
            }
        }
    }
}

/// The container fields' paths in a Service.
pub(crate) fn container_field(name: &str) -> String {
    format!("spec.template.spec.containers[0].{name}")
}

/// The process a replica runs, with Kubernetes' rules: `command` replaces the image's
/// entrypoint and drops its cmd; `args` replaces the cmd.
fn process_args(image: &Image, settings: &Settings) -> Vec<String> {
    let command = if settings.command.is_empty() { image.config.entrypoint.clone() } else { settings.command.clone() };
    let args = match (settings.args.is_empty(), settings.command.is_empty()) {
        (false, _) => settings.args.clone(),
        (true, true) => image.config.cmd.clone(),
        (true, false) => Vec::new(),
    };
    command.into_iter().chain(args).collect()
}

/// Refuses an image that cannot start, at deploy time rather than per replica; returns the
/// uid and gid its user resolves to.
fn check_runnable(image: &Image, settings: &Settings) -> Result<(u32, u32), SchedulerError> {
    // A problem with the program is the field's that chose it.
    let field = match (settings.command.is_empty(), settings.args.is_empty()) {
        (false, _) => container_field("command"),
        (true, false) if image.config.entrypoint.is_empty() => container_field("args"),
        _ => IMAGE_FIELD.into(),
    };
    let invalid = |message: String| SchedulerError::InvalidField { field: field.clone(), message };
    let args = process_args(image, settings);
    let Some(program) = args.first() else {
        return Err(invalid("the image has no entrypoint or cmd: nothing to run".into()));
    };
    if resolve_program(&image.rootfs, program, &image.config.env).is_none() {
        let what = if field == IMAGE_FIELD { "the image's entrypoint" } else { "the program" };
        return Err(invalid(format!("{what} {program:?} does not exist in the image")));
    }
    if let Some(dir) = &settings.working_dir
        && !dir.starts_with('/')
    {
        return Err(SchedulerError::InvalidField {
            field: container_field("workingDir"),
            message: format!("{dir:?} is not an absolute path"),
        });
    }
    let invalid = |message: String| SchedulerError::InvalidField { field: IMAGE_FIELD.into(), message };
    user(&image.rootfs, image.config.user.as_deref()).map_err(invalid)
}

/// Where `program` is inside the rootfs: itself if it has a slash, else found on `PATH`.
fn resolve_program(rootfs: &Path, program: &str, env: &[String]) -> Option<PathBuf> {
    let exists = |p: &str| inside(rootfs, p, 0).filter(|p| p.is_file());
    if program.contains('/') {
        return exists(program);
    }
    let path =
        env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or("/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
    path.split(':').find_map(|dir| exists(&format!("{dir}/{program}")))
}

/// `path` resolved inside the rootfs, following symlinks as the container would (absolute
/// targets are rooted at the rootfs).
fn inside(rootfs: &Path, path: &str, depth: u32) -> Option<PathBuf> {
    if depth > 40 {
        return None;
    }
    let mut resolved = PathBuf::new();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    for (i, part) in parts.iter().enumerate() {
        if *part == ".." {
            resolved.pop();
            continue;
        }
        resolved.push(part);
        let full = rootfs.join(&resolved);
        if let Ok(target) = std::fs::read_link(&full) {
            let target = target.to_string_lossy().to_string();
            let base = if target.starts_with('/') {
                String::new()
            } else {
                resolved.parent().map(|p| p.to_string_lossy().to_string()).unwrap_or_default()
            };
            let rest = parts[i + 1..].join("/");
            return inside(rootfs, &format!("/{base}/{target}/{rest}"), depth + 1);
        }
    }
    Some(rootfs.join(resolved))
}

/// The uid and gid of an image's `User` (`uid`, `uid:gid`, `name`, `name:group`), names
/// looked up in the image's own `/etc/passwd` and `/etc/group`.
fn user(rootfs: &Path, spec: Option<&str>) -> Result<(u32, u32), String> {
    let Some(spec) = spec.filter(|s| !s.is_empty()) else { return Ok((0, 0)) };
    let (u, g) = spec.split_once(':').map_or((spec, None), |(u, g)| (u, Some(g)));
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (uid, id_entry(rootfs, "/etc/passwd", |f| f[2].parse() == Ok(uid)).map_or(0, |(_, gid)| gid)),
        Err(_) => id_entry(rootfs, "/etc/passwd", |f| f[0] == u)
            .ok_or_else(|| format!("the image's user {u:?} is not in its /etc/passwd"))?,
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => id_entry(rootfs, "/etc/group", |f| f[0] == g)
                .map(|(gid, _)| gid)
                .ok_or_else(|| format!("the image's group {g:?} is not in its /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

/// The id (third field) and the next one (a passwd entry's primary gid; 0 where it is not a
/// number) of the first entry of the image's `file` that `matches`.
fn id_entry(rootfs: &Path, file: &str, matches: impl Fn(&[&str]) -> bool) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(inside(rootfs, file, 0)?).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() > 3 && matches(&fields) {
            Some((fields[2].parse().ok()?, fields[3].parse().unwrap_or(0)))
        } else {
            None
        }
    })
}

fn stop_signal(name: Option<&str>) -> i32 {
    match name.map(|s| s.trim_start_matches("SIG")) {
        Some("INT" | "2") => libc::SIGINT,
        Some("QUIT" | "3") => libc::SIGQUIT,
        Some("KILL" | "9") => libc::SIGKILL,
        Some("USR1" | "10") => libc::SIGUSR1,
        Some("USR2" | "12") => libc::SIGUSR2,
        Some("HUP" | "1") => libc::SIGHUP,
        Some("WINCH" | "28") => libc::SIGWINCH,
        _ => libc::SIGTERM,
    }
}

/// What the replicas of one revision run: the image's process with the Knative contract's
/// environment (`PORT`, `K_SERVICE`, `K_REVISION`, `K_CONFIGURATION`) and the revision's env,
/// as `user` (resolved by [`Scheduler::container_image`]).
pub(crate) fn container_spec(
    image: &Image,
    user: (u32, u32),
    function: &str,
    revision: u64,
    revision_name: &str,
    settings: &Settings,
) -> ContainerSpec {
    let (namespace, service) = crate::service::split_id(function);
    let port = if settings.port == 0 { DEFAULT_PORT } else { settings.port };
    let mut env: Vec<String> = image.config.env.clone();
    let mut set = |k: &str, v: &str| {
        env.retain(|e| e.split_once('=').is_none_or(|(key, _)| key != k));
        env.push(format!("{k}={v}"));
    };
    for (k, v) in &settings.env {
        set(k, v);
    }
    set("PORT", &port.to_string());
    set("K_SERVICE", service);
    set("K_CONFIGURATION", service);
    set("K_REVISION", revision_name);
    ContainerSpec {
        // Names are DNS labels, so '.' keeps namespace, service and revision apart.
        name: format!("{namespace}.{service}.r{revision}"),
        rootfs: image.rootfs.clone(),
        args: process_args(image, settings),
        env,
        cwd: settings
            .working_dir
            .clone()
            .or_else(|| image.config.working_dir.clone())
            .filter(|d| d.starts_with('/'))
            .unwrap_or_else(|| "/".into()),
        user,
        port,
        concurrency: settings.container_concurrency,
        limits: settings.limits(),
        stop_signal: stop_signal(image.config.stop_signal.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn image(rootfs: &Path) -> Image {
        let config = wisp_oci::RunConfig {
            entrypoint: strings(&["/bin/entry"]),
            cmd: strings(&["cmd"]),
            working_dir: Some("/image".into()),
            ..wisp_oci::RunConfig::default()
        };
        Image { manifest_hex: "ab".repeat(32), rootfs: rootfs.into(), size: 0, config, blobs: Vec::new() }
    }

    #[test]
    fn command_args_port_and_working_dir_follow_kubernetes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        for program in ["entry", "other"] {
            std::fs::write(dir.path().join("bin").join(program), "").unwrap();
        }
        let image = image(dir.path());
        let spec = |settings: &Settings| container_spec(&image, (0, 0), "default/web", 1, "web-00001", settings);
        let env = |spec: &ContainerSpec, key: &str| {
            spec.env.iter().find_map(|e| e.strip_prefix(&format!("{key}="))).map(str::to_string)
        };

        let plain = spec(&Settings::default());
        assert_eq!(
            (plain.args.clone(), plain.cwd.as_str(), plain.port),
            (strings(&["/bin/entry", "cmd"]), "/image", 8080)
        );
        assert_eq!(env(&plain, "PORT").as_deref(), Some("8080"));

        let command = Settings { command: strings(&["/bin/other"]), ..Settings::default() };
        assert_eq!(spec(&command).args, strings(&["/bin/other"]), "the image's cmd goes with its entrypoint");
        let args = Settings { args: strings(&["a", "b"]), ..Settings::default() };
        assert_eq!(spec(&args).args, strings(&["/bin/entry", "a", "b"]));
        let both = Settings {
            command: strings(&["/bin/other"]),
            args: strings(&["x"]),
            port: 9000,
            working_dir: Some("/www".into()),
            ..Settings::default()
        };
        let s = spec(&both);
        assert_eq!((s.args.clone(), s.cwd.as_str(), s.port), (strings(&["/bin/other", "x"]), "/www", 9000));
        assert_eq!(env(&s, "PORT").as_deref(), Some("9000"));

        assert!(check_runnable(&image, &both).is_ok());
        let missing = Settings { command: strings(&["/bin/none"]), ..Settings::default() };
        match check_runnable(&image, &missing) {
            Err(SchedulerError::InvalidField { field, message }) => {
                assert_eq!(field, "spec.template.spec.containers[0].command");
                assert!(message.contains("/bin/none"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let relative = Settings { working_dir: Some("www".into()), ..Settings::default() };
        assert!(check_runnable(&image, &relative).is_err());
    }
}
