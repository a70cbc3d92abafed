//! Test support: an in-memory dataplane (tables + the real control handler) and a control
//! socket server over it that can be stopped and restarted, standing in for `vrouter-dp` in
//! tests. Not used by the binaries.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use vrouter_dataplane::ctl::handler::{handle, DaemonInfo};
use vrouter_dataplane::ctl::proto::{encode, Decoder, StateDump};
use vrouter_dataplane::ctl::{CtlState, Request, Response};
use vrouter_dataplane::tables::{new_tables, HostConfig, Limits, TableOp, VifKind, VifSpec};
use vrouter_dataplane::wire::MacAddr;
use vrouter_dataplane::StatsRegistry;

/// The fabric MAC the test infrastructure uses.
pub const FABRIC_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xaa, 0xbb, 0x01]);

/// What the daemon sets up at start (as this agent assumes `vrouter-dp` does): the fabric VRF 0,
/// the fabric (vif 0), host (vif 1) and agent (vif 2) interfaces, and the host config.
pub fn infra_ops(fabric_ip: u32) -> Vec<TableOp> {
    let vif = |id, name: &str, kind, mac| {
        TableOp::AddVif(VifSpec {
            id,
            name: name.into(),
            kind,
            vrf: 0,
            mac,
            ip: if kind == VifKind::Agent { 0 } else { fabric_ip },
            mtu: 1500,
            nh: None,
            allowed: Vec::new(),
        })
    };
    vec![
        TableOp::AddVrf {
            id: 0,
            name: "fabric".into(),
        },
        vif(0, "eth1", VifKind::Physical, FABRIC_MAC),
        vif(1, "vhost0", VifKind::Host, FABRIC_MAC),
        vif(2, "pkt0", VifKind::Agent, MacAddr::VROUTER),
        TableOp::SetHost(HostConfig {
            fabric_ip,
            fabric_vif: Some(0),
            host_vif: Some(1),
            agent_vif: Some(2),
        }),
    ]
}

/// Tables and counters with the real request handler, no socket.
#[derive(Debug)]
pub struct MemDataplane {
    state: CtlState,
}

impl MemDataplane {
    /// Empty tables plus the daemon's own objects ([`infra_ops`]).
    pub fn new(fabric_ip: u32) -> Self {
        let limits = Limits::default();
        let (writer, _reader) = new_tables(limits);
        let mut dp = Self {
            state: CtlState {
                writer,
                stats: StatsRegistry::new(limits.vifs.into(), limits.vrfs as usize),
                info: DaemonInfo {
                    lcores: 1,
                    ..Default::default()
                },
            },
        };
        if let Err(e) = dp.apply(infra_ops(fabric_ip)) {
            panic!("infra ops refused: {e}");
        }
        dp
    }

    /// Answers one request.
    pub fn request(&mut self, req: Request) -> Response {
        let s = &mut self.state;
        handle(&mut s.writer, &s.stats, &s.info, req)
    }

    /// Applies operations; the dataplane's refusal as a string.
    pub fn apply(&mut self, ops: Vec<TableOp>) -> Result<(), String> {
        match self.request(Request::Apply { ops }) {
            Response::Ok => Ok(()),
            Response::Error { message, index, .. } => Err(format!("op {index:?}: {message}")),
            other => Err(format!("unexpected {other:?}")),
        }
    }

    /// The full state.
    pub fn dump(&mut self) -> StateDump {
        match self.request(Request::DumpAll) {
            Response::State(s) => *s,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A control socket server over a [`MemDataplane`] that can be stopped like a dying daemon:
/// the listener goes away and every open connection is cut.
#[derive(Debug)]
pub struct TestDataplane {
    path: PathBuf,
    /// The tables behind the socket.
    pub dp: Arc<Mutex<MemDataplane>>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<UnixStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl TestDataplane {
    /// Serves a fresh dataplane (with the daemon's own objects) at `path`, mode 0600 like the
    /// real socket.
    pub fn start(path: &Path, fabric_ip: u32) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let dp = Arc::new(Mutex::new(MemDataplane::new(fabric_ip)));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let accept = {
            let (dp, stop, conns) = (dp.clone(), stop.clone(), conns.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let _ = s.set_nonblocking(false);
                            if let Ok(c) = s.try_clone() {
                                conns.lock().unwrap_or_else(|e| e.into_inner()).push(c);
                            }
                            let dp = dp.clone();
                            std::thread::spawn(move || serve(s, dp));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Ok(Self {
            path: path.to_path_buf(),
            dp,
            stop,
            conns,
            accept: Some(accept),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The full state.
    pub fn dump(&self) -> StateDump {
        self.dp.lock().unwrap_or_else(|e| e.into_inner()).dump()
    }

    /// Stops serving: removes the socket and cuts every connection.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for TestDataplane {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(mut s: UnixStream, dp: Arc<Mutex<MemDataplane>>) {
    let mut dec = Decoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        dec.feed(&buf[..n]);
        loop {
            let resp = match dec.next_message::<Request>() {
                Ok(Some(req)) => dp.lock().unwrap_or_else(|e| e.into_inner()).request(req),
                Ok(None) => break,
                Err(e) => {
                    let _ = s.write_all(&encode(&Response::error("bad_request", e.to_string())));
                    return;
                }
            };
            if s.write_all(&encode(&resp)).is_err() {
                return;
            }
        }
    }
}
