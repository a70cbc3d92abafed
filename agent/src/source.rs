//! Where the agent's configuration comes from. Today a file; later the controller shim (a watch
//! stream of interface config and remote routes) and xenstore binding events (which VM
//! interfaces exist on this host). Each is a [`ConfigSource`]; the agent only sees [`Config`]s.

use crate::config::{Config, ConfigError};
use crate::dump::DumpIndex;
use std::path::{Path, PathBuf};

/// Why a source could not produce a configuration.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {err}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        err: std::io::Error,
    },
    /// The content is invalid.
    #[error("{path}: {err}")]
    Invalid {
        /// Path or URL.
        path: String,
        /// Cause.
        err: ConfigError,
    },
    /// The source is not available yet (e.g. controller unreachable).
    #[error("{0}")]
    Unavailable(String),
}

/// A source of desired configuration.
pub trait ConfigSource: Send + std::fmt::Debug {
    /// For logs: where the config comes from.
    fn describe(&self) -> String;
    /// The current configuration. Called at startup, on SIGHUP, and whenever
    /// [`ConfigSource::changed`] says so.
    fn load(&mut self) -> Result<Config, SourceError>;
    /// True when the source knows its config changed since the last `load` (a controller watch
    /// event, a xenstore binding event). A file source relies on SIGHUP instead.
    fn changed(&mut self) -> bool {
        false
    }
    /// False while the source cannot yet say what the whole configuration is (the controller
    /// not heard from since start, xenstore not scanned): the agent then applies nothing, so a
    /// restarted agent never removes what the headless dataplane holds.
    fn ready(&mut self) -> bool {
        true
    }
    /// Shown the dataplane's state before every pass. A source that takes something from it
    /// returns true, and the agent loads the configuration again before compiling: the
    /// controller source takes the underlay MACs of the tunnels an earlier agent programmed,
    /// so the first pass after a restart keeps remote routes instead of removing them while
    /// ARP is asked. Must not block.
    fn adopt(&mut self, _dp: &DumpIndex) -> bool {
        false
    }
    /// Items of the last `load` that could not be programmed (one line each), shown in the
    /// agent's `/status` with the compile step's.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The declarative config file, reloaded on SIGHUP.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    /// A source reading `path`.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
        }
    }
}

impl ConfigSource for FileSource {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn load(&mut self) -> Result<Config, SourceError> {
        let text = std::fs::read_to_string(&self.path).map_err(|err| SourceError::Read {
            path: self.path.clone(),
            err,
        })?;
        Config::parse(&text).map_err(|err| SourceError::Invalid {
            path: self.path.display().to_string(),
            err,
        })
    }
}

impl<T: ConfigSource + ?Sized> ConfigSource for Box<T> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn load(&mut self) -> Result<Config, SourceError> {
        (**self).load()
    }
    fn changed(&mut self) -> bool {
        (**self).changed()
    }
    fn ready(&mut self) -> bool {
        (**self).ready()
    }
    fn adopt(&mut self, dp: &DumpIndex) -> bool {
        (**self).adopt(dp)
    }
    fn warnings(&self) -> Vec<String> {
        (**self).warnings()
    }
}
