//! The watch thread: follows `GET /vrouter/watch` (long-poll, resumed with `since`) into the
//! controller state. A failed watch keeps the state as it is and is retried with a backoff.

use super::shared::Shared;
use std::time::Duration;
use vrouter_api::client::ClientError;
use vrouter_api::watch::WatchReply;

/// How long one long-poll may wait at the shim, in seconds.
const POLL_S: u32 = 25;

/// The watch thread's loop. Never returns.
pub(super) fn run(sh: &Shared) {
    let mut backoff = Duration::from_secs(1);
    let mut down_logged = false;
    loop {
        let since = wait_registered(sh);
        match sh.api.watch(&sh.s.host, since, POLL_S) {
            Ok(reply) => {
                apply(sh, &reply);
                if down_logged {
                    log::info!("controller watch resumed at rev {since}");
                    down_logged = false;
                }
                backoff = Duration::from_secs(1);
            }
            Err(e) => {
                if e.status() == Some(404) {
                    let mut g = sh.lock();
                    g.registered = false;
                    sh.kick(&mut g);
                }
                if let ClientError::Version(v) = &e {
                    log::error!("controller watch: {v}; retrying with backoff");
                    down_logged = true;
                } else if !down_logged {
                    log::warn!("controller watch: {e}; keeping the current state, retrying");
                    down_logged = true;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Waits until the worker has registered us; the revision to resume from.
fn wait_registered(sh: &Shared) -> u64 {
    let mut g = sh.lock();
    while !g.registered {
        g = sh.wait(g, Duration::from_secs(1));
    }
    g.st.since
}

/// Applies a watch answer; the first answer (and any change) makes the agent reload.
fn apply(sh: &Shared, reply: &WatchReply) {
    let mut g = sh.lock();
    let changed = g.st.apply_watch(reply);
    if changed || !g.watch_ok {
        g.changed = true;
        g.dir_gen += 1;
    }
    if reply.reset {
        log::info!(
            "controller: watch snapshot at rev {}: {} interfaces, {} remote routes",
            reply.rev,
            g.st.ifaces.len(),
            g.st.routes.len()
        );
    }
    g.watch_ok = true;
}
