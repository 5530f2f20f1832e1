//! What the machine is, and what processes cost: CPU time (ours and a server's, per thread),
//! RSS, address space, memory mappings and file descriptors, all read from /proc.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mem_total_gib: f64,
    pub vm_max_map_count: Option<u64>,
    pub open_files_limit: Option<u64>,
    pub git_commit: String,
    pub git_dirty: bool,
    pub rustc: String,
    pub wisp_bin: String,
    pub wasmtime_bin: Option<String>,
    pub wasmtime_version: Option<String>,
    pub hello_wasm: String,
    pub hello_wasm_bytes: u64,
    pub started_at_unix: u64,
    /// 1, 5 and 15 minute load averages when the run started (other work on the machine).
    pub loadavg_at_start: String,
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn command_output(cmd: &str, args: &[&str], dir: Option<&Path>) -> Option<String> {
    let mut c = Command::new(cmd);
    c.args(args);
    if let Some(dir) = dir {
        c.current_dir(dir);
    }
    let out = c.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn machine(repo: &Path, wisp_bin: &Path, wasmtime_bin: Option<&Path>, hello: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = command_output("uname", &["-r"], None)
        .or_else(|| read_trimmed("/proc/sys/kernel/osrelease"))
        .unwrap_or_else(|| "unknown".into());
    let mem_total_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| field_kib(&m, "MemTotal:"))
        .map_or(0.0, |kib| kib as f64 / (1024.0 * 1024.0));
    let git_commit = command_output("git", &["rev-parse", "HEAD"], Some(repo)).unwrap_or_else(|| "unknown".into());
    let git_dirty = command_output("git", &["status", "--porcelain", "--untracked-files=no"], Some(repo))
        .is_some_and(|s| !s.is_empty());
    let wasmtime_version = wasmtime_bin.and_then(|b| command_output(&b.to_string_lossy(), &["--version"], None));
    Machine {
        cores,
        cpu_model,
        kernel,
        mem_total_gib,
        vm_max_map_count: max_map_count(),
        open_files_limit: open_files_limit(),
        git_commit,
        git_dirty,
        rustc: command_output("rustc", &["--version"], None).unwrap_or_else(|| "unknown".into()),
        wisp_bin: wisp_bin.display().to_string(),
        wasmtime_bin: wasmtime_bin.map(|b| b.display().to_string()),
        wasmtime_version,
        hello_wasm: hello.display().to_string(),
        hello_wasm_bytes: std::fs::metadata(hello).map_or(0, |m| m.len()),
        started_at_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        loadavg_at_start: loadavg(),
    }
}

pub fn max_map_count() -> Option<u64> {
    read_trimmed("/proc/sys/vm/max_map_count")?.parse().ok()
}

pub fn open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0).then_some(lim.rlim_cur)
}

fn field_kib(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)).and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// CPU time (user + system) this process has used so far, all threads.
pub fn self_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// (comm, utime + stime in seconds) from a /proc/.../stat file.
fn parse_stat(text: &str) -> Option<(String, f64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // After "comm)": state is field 3 of the man page, so utime (14) is index 11 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / clock_ticks()))
}

/// Busy CPU seconds of the whole machine so far (all cores, from /proc/stat), to tell how much
/// of the run's CPU went to processes other than the bench and the server under test.
pub fn system_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = cpu.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = v.first()?
        + v.get(1)?
        + v.get(2)?
        + v.get(5).unwrap_or(&0.0)
        + v.get(6).unwrap_or(&0.0)
        + v.get(7).unwrap_or(&0.0);
    Some(busy / clock_ticks())
}

fn loadavg() -> String {
    read_trimmed("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU seconds a process has used so far (all its threads).
pub fn proc_cpu(pid: u32) -> Option<f64> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?).map(|(_, s)| s)
}

/// CPU seconds per thread name of a process (threads sharing a name are summed, e.g. tokio
/// workers). Threads that exited are not counted.
pub fn proc_threads_cpu(pid: u32) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for entry in dir.flatten() {
        if let Some((comm, secs)) = std::fs::read_to_string(entry.path().join("stat")).ok().and_then(|t| parse_stat(&t))
        {
            *out.entry(comm).or_insert(0.0) += secs;
        }
    }
    out
}

/// Memory and kernel-object footprint of a process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Footprint {
    pub rss_kib: u64,
    pub vm_size_kib: u64,
    pub maps: u64,
    pub fds: u64,
    pub threads: u64,
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
        threads: field_kib(&status, "Threads:").unwrap_or(0),
    }
}

/// Lowers this thread's timer slack so short sleeps wake close to on time (open-loop pacing).
pub fn precise_timers_for_this_thread() {
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe {
        libc::prctl(
            libc::PR_SET_TIMERSLACK,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
}
