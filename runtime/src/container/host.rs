//! What the host offers containers, and the Linux calls the container runtime needs: the cgroup
//! mode (and so which limits crun can enforce), the crun command line, child-subreaping,
//! pidfds, and sockets opened inside a container's network namespace.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// How the host mounts cgroups, which decides what crun can do with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// cgroup v2 only (Debian 12's default): limits and metering through cgroups.
    Unified,
    /// v1 controllers plus a v2 tree at `/sys/fs/cgroup/unified`. crun 1.8 refuses every
    /// container there ("cgroups in hybrid mode not supported"), so it runs in a private mount
    /// namespace with the v2 tree unmounted, where it sees (and uses) plain v1.
    Hybrid,
    /// cgroup v1 only.
    Legacy,
    /// No usable cgroup hierarchy: containers run without limits or metering.
    Unavailable,
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn is_cgroup2(path: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(path) else { return false };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed out-parameter of the right type.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC }
}

impl CgroupMode {
    /// Reads the host's mode from `/sys/fs/cgroup`.
    pub fn detect() -> Self {
        if is_cgroup2("/sys/fs/cgroup") {
            CgroupMode::Unified
        } else if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
            if is_cgroup2("/sys/fs/cgroup/unified") { CgroupMode::Hybrid } else { CgroupMode::Legacy }
        } else {
            CgroupMode::Unavailable
        }
    }

    /// How `wisp up` names the mode.
    pub fn describe(self) -> &'static str {
        match self {
            CgroupMode::Unified => "cgroup v2",
            CgroupMode::Hybrid => "hybrid cgroups (crun runs in a private mount namespace and uses v1)",
            CgroupMode::Legacy => "cgroup v1",
            CgroupMode::Unavailable => "no cgroups",
        }
    }

    /// Whether per-container memory and pids limits are enforced.
    pub fn limits(self) -> bool {
        !matches!(self, CgroupMode::Unavailable)
    }

    fn manager(self) -> &'static str {
        if self.limits() { "--cgroup-manager=cgroupfs" } else { "--cgroup-manager=disabled" }
    }

    /// Where a container's CPU time is readable (v2 `cpu.stat` in µs, v1 `cpuacct.usage` in ns).
    pub(crate) fn cpu_file(self, cgroup: &str) -> Option<PathBuf> {
        match self {
            CgroupMode::Unified => Some(format!("/sys/fs/cgroup{cgroup}/cpu.stat").into()),
            CgroupMode::Hybrid | CgroupMode::Legacy => {
                Some(format!("/sys/fs/cgroup/cpuacct{cgroup}/cpuacct.usage").into())
            }
            CgroupMode::Unavailable => None,
        }
    }

    /// Where a container's peak memory is readable, for a cgroups path under the hierarchy.
    pub(crate) fn memory_peak_file(self, cgroup: &str) -> Option<PathBuf> {
        match self {
            CgroupMode::Unified => Some(format!("/sys/fs/cgroup{cgroup}/memory.peak").into()),
            CgroupMode::Hybrid | CgroupMode::Legacy => {
                Some(format!("/sys/fs/cgroup/memory{cgroup}/memory.max_usage_in_bytes").into())
            }
            CgroupMode::Unavailable => None,
        }
    }
}

/// The `crun` invocation every container command goes through.
#[derive(Debug, Clone)]
pub(crate) struct Crun {
    pub(crate) program: PathBuf,
    /// crun's state directory: one per node, so nodes never see each other's containers.
    pub(crate) root: PathBuf,
    pub(crate) mode: CgroupMode,
}

impl Crun {
    pub(crate) fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command.arg(self.mode.manager()).arg("--root").arg(&self.root).stdin(Stdio::null());
        if self.mode == CgroupMode::Hybrid {
            // SAFETY: only async-signal-safe system calls on static strings between fork and exec.
            unsafe { command.pre_exec(private_mounts_without_cgroup2) };
        }
        command
    }
}

/// Runs in the forked crun before exec: a private mount namespace in which the v2 tree is
/// unmounted, so crun sees a v1 host. The node's own mounts are untouched.
fn private_mounts_without_cgroup2() -> io::Result<()> {
    const ROOT: &CStr = c"/";
    const UNIFIED: &CStr = c"/sys/fs/cgroup/unified";
    // SAFETY: plain system calls with valid static C strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = libc::MS_REC | libc::MS_PRIVATE;
        if libc::mount(std::ptr::null(), ROOT.as_ptr(), std::ptr::null(), flags, std::ptr::null()) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::umount2(UNIFIED.as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes this process the reaper of its orphaned descendants: a container's init, whose
/// `crun run -d` parent exits at once, becomes our child, so its exit is seen at once (pidfd)
/// and its status can be read.
pub(crate) fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pidfd for `pid`: readable once the process exits.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: the syscall returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Reaps the exited process behind `pidfd` (our child, as subreaper) and describes how it
/// ended.
pub(crate) fn reap(pidfd: BorrowedFd<'_>) -> String {
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pidfd and a zeroed out-parameter.
    let r = unsafe { libc::waitid(libc::P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED) };
    if r != 0 {
        // Not our child (reparented elsewhere): it exited, status unknown.
        return "exited".to_string();
    }
    // SAFETY: waitid filled a SIGCHLD siginfo.
    let status = unsafe { info.si_status() };
    match info.si_code {
        libc::CLD_EXITED => format!("exit status {status}"),
        libc::CLD_KILLED | libc::CLD_DUMPED => format!("killed by signal {status}"),
        _ => "exited".to_string(),
    }
}

pub(crate) fn kill(pid: i32, signal: i32) {
    // SAFETY: signalling a pid we reap ourselves, so it cannot have been reused.
    unsafe { libc::kill(pid, signal) };
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The node's own network namespace, to return to after opening a socket in a container's.
pub(crate) struct Netns {
    host: File,
}

impl Netns {
    pub(crate) fn open() -> io::Result<Self> {
        Ok(Self { host: File::open("/proc/thread-self/ns/net")? })
    }

    /// A non-blocking TCP socket created inside `netns`: it stays in that namespace, so the
    /// node reaches the container's `127.0.0.1:$PORT` with no veth, address or route. The
    /// switch is two system calls on this thread with nothing in between that could yield.
    pub(crate) fn socket_in(&self, netns: BorrowedFd<'_>) -> io::Result<tokio::net::TcpSocket> {
        // SAFETY: setns on valid namespace descriptors; socket returns a new descriptor or -1.
        let fd = unsafe {
            if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0);
            let error = io::Error::last_os_error();
            if libc::setns(self.host.as_fd().as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                // A worker thread left in a container's namespace would misroute everything.
                panic!("cannot return to the node's network namespace: {}", io::Error::last_os_error());
            }
            if fd < 0 {
                return Err(error);
            }
            OwnedFd::from_raw_fd(fd)
        };
        Ok(tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd)))
    }
}
