// SPDX-License-Identifier: Apache-2.0
//! `vrouter-xenstored`: a xenstore daemon for machines without Xen (development, CI, devcloud).
//!
//! Speaks the xenstore wire protocol on a unix socket, so Debian's `xenstore-*` tools
//! (`XENSTORED_PATH=<socket>`) and our own client work against it. Foreground, logs to stderr.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use clap::Parser;
use sd_notify::NotifyState;
use vrouter_xen::client::Client;
use vrouter_xen::daemon::{Daemon, DaemonConfig};

/// The command line; `--help` and `--version` exit 0, a bad flag exits 2 with clap's message.
#[derive(Debug, Parser)]
#[command(
    name = "vrouter-xenstored",
    version,
    about = "A xenstore daemon for machines without Xen (development, CI, devcloud)"
)]
struct Args {
    /// Listen here [default: /var/run/xenstored/socket].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Mode of the socket file, octal [default: 0600: only root may connect].
    #[arg(long, value_name = "OCTAL", value_parser = octal_mode)]
    socket_mode: Option<u32>,
    /// Treat this non-root uid as dom0 (repeatable); other non-root peers are unprivileged:
    /// they may read, and write only where permissions allow.
    #[arg(long, value_name = "UID")]
    privileged_uid: Vec<u32>,
    /// Domain id of unprivileged peers [default: 32752].
    #[arg(long, value_name = "N")]
    unprivileged_domid: Option<u32>,
    /// More logging: -v debug, -vv trace.
    #[arg(short, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// `--socket-mode`: an octal permission mode such as 0600.
fn octal_mode(v: &str) -> Result<u32, String> {
    match u32::from_str_radix(v, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err("an octal mode such as 0600".into()),
    }
}

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

/// The daemon's settings and log level from the command line.
fn settings(args: Args) -> (DaemonConfig, &'static str) {
    let mut cfg = DaemonConfig::default();
    if let Some(s) = args.socket {
        cfg.socket = s;
    }
    if let Some(m) = args.socket_mode {
        cfg.socket_mode = m;
    }
    cfg.privileged_uids.extend(args.privileged_uid);
    if let Some(d) = args.unprivileged_domid {
        cfg.unprivileged_domid = d;
    }
    let level = match args.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    (cfg, level)
}

fn main() -> ExitCode {
    vrouter_clidocs::generate_if_asked(<Args as clap::CommandFactory>::command);
    let (cfg, level) = settings(Args::parse());
    if let Err(e) = vrouter_log::init(level) {
        eprintln!("vrouter-xenstored: {e}");
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
    notify_ready(&cfg.socket);
    match daemon.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vrouter-xenstored: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Tells the service manager (systemd, `Type=notify`) that the socket is bound; with
/// `WatchdogSec=` in the unit, a thread pings the watchdog at half its period, but only while a
/// xenstore read of `/` on the socket is answered. Without systemd it does nothing.
fn notify_ready(socket: &Path) {
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready]) {
        log::warn!("cannot tell the service manager we are ready: {e}");
    }
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) {
        return;
    }
    let period = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
    let socket = socket.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            let answered = Client::connect_unix(&socket).and_then(|mut c| {
                c.set_reply_timeout(Some(period));
                c.directory("/")
            });
            match answered {
                Ok(_) => {
                    let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
                }
                Err(e) => log::warn!("watchdog: {} does not answer ({e})", socket.display()),
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the watchdog thread: {e}");
    }
}
