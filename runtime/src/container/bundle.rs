//! The OCI runtime bundle of one replica: a `config.json` over the image's shared, read-only
//! rootfs. crun's own defaults (`crun spec`) with the Knative runtime contract on top.

use super::{CgroupMode, ContainerSpec};
use serde_json::{Value, json};

/// Limits crun enforces through cgroups, where the host has them.
pub(crate) struct Resources {
    pub(crate) memory_bytes: u64,
    pub(crate) pids: u32,
    /// The cgroups path (`/wisp/<node>/<container>`).
    pub(crate) cgroup: String,
}

/// The `config.json` of one replica.
pub(crate) fn config(spec: &ContainerSpec, hostname: &str, mode: CgroupMode, resources: &Resources) -> Value {
    let (uid, gid) = spec.user;
    let mut env = spec.env.clone();
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let tmp_size = format!("size={}k", (resources.memory_bytes / 4 / 1024).clamp(1024, 1 << 20));
    env.retain(|e| !e.starts_with("PATH=")); // re-added below, once
    let path = spec.env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    env.push(format!("PATH={path}"));
    let mut linux = json!({
        // Its own network namespace: no network unless granted; the node reaches
        // 127.0.0.1:$PORT in it through a socket opened there.
        "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    });
    if mode.limits() {
        linux["cgroupsPath"] = json!(resources.cgroup);
        linux["resources"] = json!({
            "memory": {"limit": resources.memory_bytes},
            "pids": {"limit": resources.pids},
        });
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": spec.args,
            "env": env,
            "cwd": spec.cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        // One rootfs per image, shared read-only by every replica; writes go to /tmp.
        "root": {"path": spec.rootfs, "readonly": true},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", tmp_size]},
        ],
        "linux": linux,
    })
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
