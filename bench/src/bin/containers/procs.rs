//! The node's containers as /proc shows them, and what they cost in memory.
//!
//! The node is its containers' child subreaper: `crun run -d` exits at once and each container's
//! init becomes a direct child of the node. The node's other children (a `crun` still running
//! or not yet reaped) share the node's pid namespace; a container's init does not, which is how
//! the two are told apart. A container is named by its cgroup (`/wisp/<node>/<id>`, the id being
//! `<namespace>.<service>.r<revision>-<n>`), which attributes it to its service.

use serde::Serialize;
use std::path::Path;
use std::process::Command;

/// One container: its init's pid and its crun id (from the cgroup path; empty without cgroups).
#[derive(Debug, Clone)]
pub struct Container {
    pub pid: u32,
    pub id: String,
}

/// (pid, ppid) of every process now.
fn processes() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After "(comm)": state, then ppid.
        let ppid = stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?.parse().ok()?;
        Some((pid, ppid))
    })
    .collect()
}

fn pid_ns(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// The container id from `/proc/PID/cgroup`: the last component of a `/wisp/...` path.
fn cgroup_id(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .find(|path| path.starts_with("/wisp/"))
        .and_then(|path| path.rsplit('/').next())
        .unwrap_or_default()
        .to_string()
}

/// The node's containers now: its direct children in another pid namespace.
pub fn containers(node: u32) -> Vec<Container> {
    let Some(node_ns) = pid_ns(node) else { return Vec::new() };
    processes()
        .into_iter()
        .filter(|&(pid, ppid)| ppid == node && pid_ns(pid).is_some_and(|ns| ns != node_ns))
        .map(|(pid, _)| Container { pid, id: cgroup_id(pid) })
        .collect()
}

/// Summed memory of a set of processes, KiB (from `/proc/PID/smaps_rollup`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Memory {
    pub processes: u64,
    /// Proportional set size: shared pages split among the processes sharing them. Summed over
    /// processes it counts every page once.
    pub pss_kib: u64,
    pub pss_anon_kib: u64,
    pub pss_file_kib: u64,
    /// Resident set size (shared pages counted in every process).
    pub rss_kib: u64,
}

fn rollup(pid: u32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some(Memory {
        processes: 1,
        pss_kib: field("Pss:")?,
        pss_anon_kib: field("Pss_Anon:").unwrap_or(0),
        pss_file_kib: field("Pss_File:").unwrap_or(0),
        rss_kib: field("Rss:").unwrap_or(0),
    })
}

/// The memory of `roots` and all their descendants (a container's init and what it forked).
pub fn memory(roots: &[u32]) -> Memory {
    let all = processes();
    let mut tree: Vec<u32> = roots.to_vec();
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(all.iter().filter(|&&(_, ppid)| ppid == parent).map(|&(pid, _)| pid));
        i += 1;
    }
    let mut sum = Memory::default();
    for m in tree.iter().filter_map(|&pid| rollup(pid)) {
        sum.processes += m.processes;
        sum.pss_kib += m.pss_kib;
        sum.pss_anon_kib += m.pss_anon_kib;
        sum.pss_file_kib += m.pss_file_kib;
        sum.rss_kib += m.rss_kib;
    }
    sum
}

/// `crun --version`'s first line, e.g. `crun version 1.8.1`.
pub fn crun_version() -> String {
    Command::new("crun")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
        .unwrap_or_else(|| "crun not found".into())
}

/// (state dir, container id) of every container crun lists under /run/wisp whose bundle lies
/// in `data_dir`: what a node on that data dir left behind.
fn crun_listed(data_dir: &Path) -> Vec<(std::path::PathBuf, String)> {
    let Ok(dirs) = std::fs::read_dir("/run/wisp") else { return Vec::new() };
    let mut found = Vec::new();
    for root in dirs.filter_map(|d| Some(d.ok()?.path())) {
        let Ok(out) = Command::new("crun").arg("--root").arg(&root).args(["list", "--format", "json"]).output() else {
            continue;
        };
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for c in listed.as_array().into_iter().flatten() {
            let bundle = c["bundle"].as_str().unwrap_or_default();
            if Path::new(bundle).starts_with(data_dir) {
                found.push((root.clone(), c["id"].as_str().unwrap_or_default().to_string()));
            }
        }
    }
    found
}

/// Containers crun still lists for `data_dir`.
pub fn crun_leftovers(data_dir: &Path) -> Vec<String> {
    crun_listed(data_dir).into_iter().map(|(_, id)| id).collect()
}

/// Deletes (killing) the containers crun still lists for `data_dir`, as the node's next start
/// on that data dir would.
pub fn crun_delete(data_dir: &Path) {
    for (root, id) in crun_listed(data_dir) {
        let _ = Command::new("crun").arg("--root").arg(&root).args(["delete", "-f", &id]).output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_with_its_memory() {
        let me = std::process::id();
        assert!(processes().iter().any(|&(pid, _)| pid == me));
        let m = memory(&[me]);
        assert!(m.processes >= 1 && m.pss_kib > 0 && m.rss_kib >= m.pss_kib, "{m:?}");
        // Not a subreaper of containers: none found.
        assert!(containers(me).is_empty());
    }
}
