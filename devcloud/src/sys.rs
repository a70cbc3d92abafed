//! Running commands, namespaces and daemons, with errors that say what failed and how to fix it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// What went wrong while building or inspecting the devcloud.
#[derive(Debug, thiserror::Error)]
pub enum DevcloudError {
    /// A command failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A program is missing.
    #[error("{tool} not found; install it with: {fix}")]
    Missing {
        /// The program.
        tool: String,
        /// The command that installs it.
        fix: String,
    },
    /// Not root.
    #[error("the devcloud builds network namespaces and must run as root: sudo {0}")]
    NotRoot(String),
    /// A check or provisioning step failed.
    #[error("{0}")]
    Step(String),
    /// I/O.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, DevcloudError>;

/// Runs a command, returning stdout; fails with stderr.
pub fn run(cmd: &[&str]) -> Result<String> {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DevcloudError::Io(cmd.join(" "), e))?;
    if !out.status.success() {
        return Err(DevcloudError::Command {
            cmd: cmd.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command inside namespace `ns`.
pub fn run_in(ns: &str, cmd: &[&str]) -> Result<String> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(cmd);
    run(&full)
}

/// Runs `ip` with arguments.
pub fn ip(args: &[&str]) -> Result<String> {
    let mut full = vec!["ip"];
    full.extend_from_slice(args);
    run(&full)
}

/// Namespaces that exist now.
pub fn namespaces() -> Vec<String> {
    run(&["ip", "netns", "list"])
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Creates a namespace with loopback up.
pub fn add_netns(ns: &str) -> Result<()> {
    ip(&["netns", "add", ns])?;
    run_in(ns, &["ip", "link", "set", "lo", "up"])?;
    Ok(())
}

/// Deletes a namespace (and with it every interface inside it), ignoring one that is gone.
pub fn del_netns(ns: &str) {
    let _ = ip(&["netns", "del", ns]);
}

/// Starts `argv` in namespace `ns` in the background, output to `log`. Returns the child (its
/// pid is the daemon's: `ip netns exec` replaces itself with the command).
pub fn spawn_in(ns: &str, argv: &[String], log: &Path, env: &[(&str, &str)]) -> Result<Child> {
    let f =
        std::fs::File::create(log).map_err(|e| DevcloudError::Io(log.display().to_string(), e))?;
    let f2 = f
        .try_clone()
        .map_err(|e| DevcloudError::Io(log.display().to_string(), e))?;
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(f2);
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn()
        .map_err(|e| DevcloudError::Io(format!("start {}", argv.join(" ")), e))
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILL.
pub fn stop_pid(pid: u32, grace: std::time::Duration) {
    let p = pid as libc::pid_t;
    // SAFETY: kill(2) with a pid we started and recorded; signals to a gone pid fail harmlessly.
    unsafe {
        libc::kill(p, libc::SIGTERM);
    }
    let until = std::time::Instant::now() + grace;
    while std::time::Instant::now() < until {
        if !alive(pid) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(p, libc::SIGKILL);
    }
}

/// True if a process with this pid exists (and is not a zombie we could reap).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Finds a program on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `f` on every item, on up to `workers` threads side by side (the devcloud's steps are
/// mostly waiting on `ip`, the hook and the daemons, not CPU); the items' results in order.
/// Every item runs even when one fails, so a report names every failure, not the first.
pub fn parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Result<R>>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                if let Ok(mut g) = out.lock() {
                    g[i] = Some(r);
                }
            });
        }
    });
    out.into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(DevcloudError::Step("a devcloud worker panicked".into()))))
        .collect()
}
