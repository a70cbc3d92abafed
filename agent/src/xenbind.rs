//! The xenstore binding source: runs [`vrouter_xen::binder::Binder`] on its own thread and
//! reports which dom0 port is which CloudStack Nic to a [`BindTarget`] (the controller source, or
//! the config file's interfaces that carry a `nic_uuid`).
//!
//! The thread never gives up: a xenstore daemon that is not there yet, or a connection that
//! breaks, is retried every few seconds (bindings are kept and resynchronised by the binder).

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vrouter_xen::binder::{
    BindSink, Binder, BinderConfig, KnownInterface, StaticDirectory, SysfsProbe, VifBinding,
};
use vrouter_xen::client::DynTransport;
use vrouter_xen::transport::UnixTransport;
use vrouter_xen::Client;

/// Who learns about bindings. Called from the binder thread; must not block for long.
pub trait BindTarget: Send + Sync + 'static {
    /// The interfaces known now (for the binder's MAC / name fallbacks and MAC checks).
    fn directory(&self) -> Vec<KnownInterface>;
    /// Changes whenever [`BindTarget::directory`] may answer differently.
    fn directory_generation(&self) -> u64;
    /// `b.port` is the Nic `b.nic_uuid`.
    fn bound(&self, b: &VifBinding);
    /// `b.port` is gone (exactly the value given to `bound`).
    fn unbound(&self, b: &VifBinding);
    /// The binder has scanned xenstore once (every vif present at start is decided).
    fn scanned(&self);
}

/// Binder thread settings.
#[derive(Debug, Clone, Default)]
pub struct XenOptions {
    /// xenstored socket; default `$XENSTORED_PATH`, the standard socket, then `/dev/xen/xenbus`.
    pub socket: Option<PathBuf>,
}

struct Sink<'a>(&'a dyn BindTarget);

impl BindSink for Sink<'_> {
    type Error = Infallible;
    fn bind(&mut self, b: &VifBinding) -> Result<(), Infallible> {
        tracing::info!(
            vif = %b.port,
            vm = %b.vm_uuid,
            nic = %b.nic_uuid,
            mac = %b.mac,
            by = ?b.identified_by,
            "xenstore: interface plugged"
        );
        self.0.bound(b);
        Ok(())
    }
    fn unbind(&mut self, b: &VifBinding) -> Result<(), Infallible> {
        tracing::info!(
            vif = %b.port,
            vm = %b.vm_uuid,
            nic = %b.nic_uuid,
            "xenstore: interface gone"
        );
        self.0.unbound(b);
        Ok(())
    }
}

fn connect(opts: &XenOptions) -> Result<Client<DynTransport>, String> {
    match &opts.socket {
        Some(p) => UnixTransport::connect(p)
            .map(|t| Client::new(Box::new(t) as DynTransport))
            .map_err(|e| format!("xenstore socket {}: {e}", p.display())),
        None => Client::open().map_err(|e| e.to_string()),
    }
}

/// Starts the binder thread.
///
/// # Errors
/// The thread could not be spawned.
pub fn spawn(
    opts: XenOptions,
    target: Arc<dyn BindTarget>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("xenstore-binder".into())
        .spawn(move || run(&opts, &*target))
}

fn run(opts: &XenOptions, target: &dyn BindTarget) {
    let mut binder: Option<Binder<DynTransport>> = None;
    let mut connected = false;
    let mut down_logged = false;
    let mut scanned = false;
    let mut dir_gen = u64::MAX;
    let mut dir = StaticDirectory::default();
    loop {
        if !connected {
            let client = match connect(opts) {
                Ok(c) => c,
                Err(e) => {
                    if !down_logged {
                        log::warn!("xenstore: {e}; retrying every 2s");
                        down_logged = true;
                    }
                    std::thread::sleep(Duration::from_secs(2));
                    continue;
                }
            };
            let r = match binder.as_mut() {
                Some(b) => b.reconnect(client),
                None => Binder::new(client, BinderConfig::default(), Box::new(SysfsProbe))
                    .map(|b| binder = Some(b)),
            };
            if let Err(e) = r {
                log::warn!("xenstore: {e}; retrying in 2s");
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
            log::info!("xenstore: watching {}", vrouter_xen::binder::BACKEND_VIF);
            connected = true;
            down_logged = false;
        }
        let Some(b) = binder.as_mut() else {
            connected = false;
            continue;
        };
        let gen = target.directory_generation();
        let mut sink = Sink(target);
        let mut res = Ok(());
        if gen != dir_gen {
            dir_gen = gen;
            dir = StaticDirectory {
                interfaces: target.directory(),
            };
            if scanned {
                res = b.retry_pending(&dir, &mut sink).map(|_| ());
            }
        }
        let mut events = 0;
        if res.is_ok() {
            res = b
                .poll(&dir, &mut sink, Some(Duration::from_millis(500)))
                .map(|st| events = st.events);
        }
        match res {
            Ok(()) => {
                // The watch fires once when registered, and that first event makes the binder
                // scan everything: only then is the set of bound vifs complete.
                if !scanned && events > 0 {
                    scanned = true;
                    target.scanned();
                }
            }
            Err(e) => {
                log::warn!("xenstore connection lost ({e}); reconnecting, bindings kept");
                connected = false;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// `KnownInterface` from strings, `None` if a UUID does not parse.
pub fn known_interface(
    nic: &str,
    vm: &str,
    network: Option<&str>,
    name: &str,
    mac: Option<[u8; 6]>,
) -> Option<KnownInterface> {
    Some(KnownInterface {
        nic_uuid: nic.parse().ok()?,
        vm_uuid: vm.parse().ok()?,
        network_uuid: network.and_then(|n| n.parse().ok()),
        name: name.to_string(),
        mac: mac.map(vrouter_xen::MacAddr),
    })
}

/// The config file with xenstore bindings (`--config FILE --xenstore`): interfaces that carry a
/// `nic_uuid` are programmed only while xenstore binds a vif to that Nic, under the vif's port
/// name (their floating IPs follow); the others are programmed as written.
#[derive(Debug)]
pub struct XenFileSource {
    file: crate::source::FileSource,
    shared: Arc<FileBindings>,
}

#[derive(Debug, Default)]
struct FileBindingsInner {
    /// Nic -> port.
    ports: std::collections::BTreeMap<String, String>,
    known: Vec<KnownInterface>,
    gen: u64,
    changed: bool,
    scanned: bool,
}

/// The binder target of [`XenFileSource`].
#[derive(Debug, Default)]
pub struct FileBindings(std::sync::Mutex<FileBindingsInner>);

impl FileBindings {
    fn lock(&self) -> std::sync::MutexGuard<'_, FileBindingsInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BindTarget for FileBindings {
    fn directory(&self) -> Vec<KnownInterface> {
        self.lock().known.clone()
    }
    fn directory_generation(&self) -> u64 {
        self.lock().gen
    }
    fn bound(&self, b: &VifBinding) {
        let mut g = self.lock();
        g.ports.insert(b.nic_uuid.to_string(), b.port.clone());
        g.changed = true;
    }
    fn unbound(&self, b: &VifBinding) {
        let mut g = self.lock();
        let nic = b.nic_uuid.to_string();
        if g.ports.get(&nic) == Some(&b.port) {
            g.ports.remove(&nic);
        }
        g.changed = true;
    }
    fn scanned(&self) {
        let mut g = self.lock();
        g.scanned = true;
        g.changed = true;
    }
}

impl XenFileSource {
    /// Wraps the file source.
    pub fn new(file: crate::source::FileSource) -> Self {
        Self {
            file,
            shared: Arc::default(),
        }
    }

    /// The binder target.
    pub fn bind_target(&self) -> Arc<dyn BindTarget> {
        self.shared.clone()
    }
}

/// Keeps the interfaces of `cfg` with a `nic_uuid` only if bound (renamed to their port). Pure.
pub fn apply_file_bindings(
    mut cfg: crate::config::Config,
    ports: &std::collections::BTreeMap<String, String>,
) -> crate::config::Config {
    let mut renamed = std::collections::HashMap::new();
    cfg.interfaces.retain_mut(|i| {
        let Some(nic) = &i.nic_uuid else {
            return true;
        };
        match ports.get(nic) {
            Some(port) => {
                renamed.insert(i.name.clone(), Some(port.clone()));
                i.name = port.clone();
                true
            }
            None => {
                renamed.insert(i.name.clone(), None);
                false
            }
        }
    });
    // A port name that collides with a static interface's name: the static one wins.
    let mut seen = std::collections::HashSet::new();
    cfg.interfaces.retain(|i| seen.insert(i.name.clone()));
    cfg.floating_ips
        .retain_mut(|f| match renamed.get(&f.interface) {
            None => true,
            Some(Some(p)) => {
                f.interface = p.clone();
                true
            }
            Some(None) => false,
        });
    cfg
}

impl crate::source::ConfigSource for XenFileSource {
    fn describe(&self) -> String {
        format!("{} + xenstore", self.file.describe())
    }
    fn load(&mut self) -> Result<crate::config::Config, crate::source::SourceError> {
        let cfg = self.file.load()?;
        let known: Vec<KnownInterface> = cfg
            .interfaces
            .iter()
            .filter_map(|i| {
                known_interface(
                    i.nic_uuid.as_deref()?,
                    i.vm_uuid
                        .as_deref()
                        .unwrap_or("00000000-0000-0000-0000-000000000000"),
                    None,
                    &i.name,
                    Some(i.mac.0),
                )
            })
            .collect();
        let mut g = self.shared.lock();
        g.changed = false;
        if g.known != known {
            g.known = known;
            g.gen += 1;
        }
        Ok(apply_file_bindings(cfg, &g.ports))
    }
    fn changed(&mut self) -> bool {
        self.shared.lock().changed
    }
    /// Until xenstore has been scanned once, a file with xenstore-bound interfaces is held back
    /// (applying it would remove those interfaces from a dataplane that still forwards for them);
    /// a file without any is applied at once, xenstore or not.
    fn ready(&mut self) -> bool {
        let g = self.shared.lock();
        g.scanned || g.known.is_empty()
    }
}
