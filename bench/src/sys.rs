//! What the machine is, and what processes cost: CPU time, RSS, address space, memory mappings
//! and file descriptors, all read from /proc.

use serde::Serialize;
use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mem_total_mib: u64,
    /// 1, 5 and 15 minute load averages when the run started (other work on the machine).
    pub loadavg_at_start: String,
    pub vm_max_map_count: Option<u64>,
    pub open_files_limit: Option<u64>,
    pub git_commit: String,
    pub git_dirty: bool,
    pub rustc: String,
    pub wasmtime_version: Option<String>,
    pub hello_wasm: String,
    pub hello_wasm_bytes: u64,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn output(cmd: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn machine(repo: &Path, wasmtime_bin: Option<&Path>, hello: &Path) -> Machine {
    let unknown = || "unknown".to_string();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo.lines().find_map(|l| Some(l.strip_prefix("model name")?.split_once(':')?.1.trim().into()));
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let repo = repo.to_string_lossy();
    let git = |args: &[&str]| output("git", &[&["-C", &*repo], args].concat());
    let mut nofile = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    let nofile_ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) } == 0;
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: cpu_model.unwrap_or_else(unknown),
        kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(unknown),
        mem_total_mib: field_kib(&meminfo, "MemTotal:").unwrap_or(0) / 1024,
        loadavg_at_start: read_trimmed("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
        vm_max_map_count: read_trimmed("/proc/sys/vm/max_map_count").and_then(|s| s.parse().ok()),
        open_files_limit: nofile_ok.then_some(nofile.rlim_cur),
        git_commit: git(&["rev-parse", "HEAD"]).unwrap_or_else(unknown),
        git_dirty: git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty()),
        rustc: output("rustc", &["--version"]).unwrap_or_else(unknown),
        wasmtime_version: wasmtime_bin.and_then(|b| output(b, &["--version"])),
        hello_wasm: hello.display().to_string(),
        hello_wasm_bytes: std::fs::metadata(hello).map_or(0, |m| m.len()),
    }
}

fn field_kib(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)).and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU seconds (user + system) a process has used so far, all its threads.
pub fn proc_cpu(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "(comm)" the state is field 3 of proc(5), so utime (field 14) is index 11 here.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// Busy CPU seconds of the whole machine so far (all cores, from /proc/stat), to tell how much
/// of the run's CPU went to processes other than the bench and the server under test.
pub fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<f64> =
        stat.lines().next()?.strip_prefix("cpu ")?.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user): all but
    // idle and iowait.
    let busy = v.iter().take(8).sum::<f64>() - v.get(3)? - v.get(4)?;
    Some(busy / clock_ticks())
}

/// Memory and kernel-object footprint of a process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Footprint {
    pub rss_kib: u64,
    pub vm_size_kib: u64,
    pub maps: u64,
    pub fds: u64,
}

pub fn footprint(pid: u32) -> Footprint {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let maps =
        std::fs::read(format!("/proc/{pid}/maps")).map_or(0, |m| m.iter().filter(|&&b| b == b'\n').count() as u64);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    Footprint {
        rss_kib: field_kib(&status, "VmRSS:").unwrap_or(0),
        vm_size_kib: field_kib(&status, "VmSize:").unwrap_or(0),
        maps,
        fds,
    }
}
