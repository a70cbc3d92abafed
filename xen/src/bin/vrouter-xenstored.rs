// SPDX-License-Identifier: Apache-2.0
//! `vrouter-xenstored`: a xenstore daemon for machines without Xen (development, CI, devcloud).
//!
//! Speaks the xenstore wire protocol on a unix socket, so Debian's `xenstore-*` tools
//! (`XENSTORED_PATH=<socket>`) and our own client work against it. Foreground, logs to stderr.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;

use vrouter_xen::daemon::{Daemon, DaemonConfig};

const USAGE: &str = "\
usage: vrouter-xenstored [--socket PATH] [--socket-mode OCTAL] [--privileged-uid UID]...
                         [--unprivileged-domid N] [-v|-vv]

  --socket PATH           listen here (default /var/run/xenstored/socket)
  --socket-mode OCTAL     mode of the socket file (default 0600: only root may connect)
  --privileged-uid UID    treat this non-root uid as dom0 (repeatable); other non-root peers
                          are unprivileged: they may read, and write only where perms allow
  --unprivileged-domid N  domain id of unprivileged peers (default 32752)
  -v, -vv                 debug, trace logging
";

/// Minimal stderr logger: the daemon needs nothing more, and it keeps dependencies down.
struct StderrLogger(log::LevelFilter);

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("vrouter-xenstored: {}: {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: OnceLock<StderrLogger> = OnceLock::new();
static SOCKET_CSTR: OnceLock<CString> = OnceLock::new();

extern "C" fn on_signal(_sig: libc::c_int) {
    if let Some(p) = SOCKET_CSTR.get() {
        // SAFETY: unlink and _exit are async-signal-safe; `p` is a NUL-terminated string that
        // lives for the whole process (a static set before the handler was installed).
        unsafe { libc::unlink(p.as_ptr()) };
    }
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(0) };
}

fn parse_args() -> Result<(DaemonConfig, log::LevelFilter), String> {
    let mut cfg = DaemonConfig::default();
    let mut level = log::LevelFilter::Info;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--socket" => cfg.socket = PathBuf::from(value("--socket")?),
            "--socket-mode" => {
                let v = value("--socket-mode")?;
                cfg.socket_mode =
                    u32::from_str_radix(&v, 8).map_err(|_| format!("bad mode {v:?}"))?;
            }
            "--privileged-uid" => {
                let v = value("--privileged-uid")?;
                cfg.privileged_uids
                    .push(v.parse().map_err(|_| format!("bad uid {v:?}"))?);
            }
            "--unprivileged-domid" => {
                let v = value("--unprivileged-domid")?;
                cfg.unprivileged_domid = v.parse().map_err(|_| format!("bad domid {v:?}"))?;
            }
            "-v" => level = log::LevelFilter::Debug,
            "-vv" => level = log::LevelFilter::Trace,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok((cfg, level))
}

fn main() -> ExitCode {
    let (cfg, level) = match parse_args() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("vrouter-xenstored: {e}");
            return ExitCode::from(2);
        }
    };
    let logger = LOGGER.get_or_init(|| StderrLogger(level));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
    let daemon = match Daemon::bind(cfg.clone()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vrouter-xenstored: {}: {e}", cfg.socket.display());
            return ExitCode::FAILURE;
        }
    };
    // Remove the socket on SIGTERM/SIGINT so the next start finds a clean path.
    if let Ok(c) = CString::new(cfg.socket.as_os_str().as_bytes()) {
        let _ = SOCKET_CSTR.set(c);
        for sig in [libc::SIGTERM, libc::SIGINT] {
            // SAFETY: installing a handler that only calls async-signal-safe functions.
            unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        }
    }
    match daemon.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vrouter-xenstored: {e}");
            ExitCode::FAILURE
        }
    }
}
