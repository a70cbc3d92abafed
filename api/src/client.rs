// SPDX-License-Identifier: Apache-2.0
//! The blocking HTTP client of the shim, shared by the agent (agent API) and the devcloud (VNC
//! API and agent API): one place that sets the token and the version header, checks the peer's
//! version, and turns an answer into a typed value or a typed error.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::agent::{
    version_mismatch, Advertise, Advertised, AgentList, Binding, Bound, ErrorReply, RegisterAgent,
    Registered, RouteList, Unbound, Withdraw, Withdrawn, API_VERSION, VERSION_HEADER,
};
use crate::ids::Uuid;
use crate::interface::InterfaceConfig;
use crate::watch::WatchReply;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The shim answered with an error status.
    #[error("HTTP {code}: {message}")]
    Status {
        /// Status code.
        code: u16,
        /// The shim's message (or the body as it came, if it was not an error reply).
        message: String,
    },
    /// The shim speaks another version of the contract.
    #[error("{0}")]
    Version(String),
    /// No answer, or an answer that is not what the call returns.
    #[error("{0}")]
    Transport(String),
}

impl ClientError {
    /// The HTTP status, if the shim answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Timeouts of a client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connecting.
    pub connect: Duration,
    /// Reading an answer (long-polls need more than their own timeout).
    pub read: Duration,
    /// Writing a request.
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(3),
            read: Duration::from_secs(45),
            write: Duration::from_secs(10),
        }
    }
}

/// A JSON-over-HTTP client of one shim.
#[derive(Debug, Clone)]
pub struct Http {
    http: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Http {
    /// A client of `base` (`http://host:port`), sending `token` as `X-Auth-Token`.
    pub fn new(base: &str, token: Option<String>, t: Timeouts) -> Http {
        let http = ureq::AgentBuilder::new()
            .timeout_connect(t.connect)
            .timeout_read(t.read)
            .timeout_write(t.write)
            .build();
        Http {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// `method path` with an optional JSON body; the answer parsed as `R` (an empty body
    /// parses as JSON `null`, so `R = ()` or `Option<_>` accepts it).
    pub fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, ClientError> {
        let what = || format!("{method} {path}");
        let mut req = self
            .http
            .request(method, &format!("{}{path}", self.base))
            .set(VERSION_HEADER, &API_VERSION.to_string());
        if let Some(t) = &self.token {
            req = req.set("X-Auth-Token", t);
        }
        let res = match body {
            Some(b) => req
                .set("Content-Type", "application/json; charset=\"UTF-8\"")
                .send_json(b),
            None => req.call(),
        };
        let (status, r) = match res {
            Ok(r) => (None, r),
            Err(ureq::Error::Status(code, r)) => (Some(code), r),
            Err(e) => return Err(ClientError::Transport(format!("{}: {e}", what()))),
        };
        if let Some(v) = r
            .header(VERSION_HEADER)
            .filter(|v| v.trim() != API_VERSION.to_string())
        {
            return Err(ClientError::Version(version_mismatch(v.trim())));
        }
        let text = r
            .into_string()
            .map_err(|e| ClientError::Transport(format!("{}: {e}", what())))?;
        if let Some(code) = status {
            let message = serde_json::from_str::<ErrorReply>(&text)
                .map(|e| e.message)
                .unwrap_or(text);
            return Err(ClientError::Status { code, message });
        }
        let text = if text.trim().is_empty() {
            "null"
        } else {
            &text
        };
        serde_json::from_str(text).map_err(|e| ClientError::Transport(format!("{}: {e}", what())))
    }

    /// A call without a body.
    pub fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        self.call::<(), R>("GET", path, None)
    }
}

/// The agent API, typed.
#[derive(Debug, Clone)]
pub struct AgentApi {
    /// The transport.
    pub http: Http,
}

impl AgentApi {
    /// A client of the shim at `base`.
    pub fn new(base: &str, token: Option<String>) -> AgentApi {
        AgentApi {
            http: Http::new(base, token, Timeouts::default()),
        }
    }

    /// `POST /vrouter/agents`.
    pub fn register(&self, hostname: &str, fabric_ip: Ipv4Addr) -> Result<Registered, ClientError> {
        let body = RegisterAgent {
            hostname: hostname.to_string(),
            fabric_ip,
        };
        self.http.call("POST", "/vrouter/agents", Some(&body))
    }

    /// `POST /vrouter/bindings`.
    pub fn bind(&self, host: &str, vmi: Uuid) -> Result<Bound, ClientError> {
        let body = Binding {
            host: host.to_string(),
            vmi_uuid: vmi,
        };
        self.http.call("POST", "/vrouter/bindings", Some(&body))
    }

    /// `DELETE /vrouter/bindings`.
    pub fn unbind(&self, host: &str, vmi: Uuid) -> Result<Unbound, ClientError> {
        let body = Binding {
            host: host.to_string(),
            vmi_uuid: vmi,
        };
        self.http.call("DELETE", "/vrouter/bindings", Some(&body))
    }

    /// `GET /vrouter/interfaces/<vmi>`; `None` if the shim does not know it (yet).
    pub fn interface(&self, vmi: Uuid) -> Result<Option<InterfaceConfig>, ClientError> {
        match self.http.get(&format!("/vrouter/interfaces/{vmi}")) {
            Ok(c) => Ok(Some(c)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /vrouter/routes`.
    pub fn advertise(&self, ad: &Advertise) -> Result<Advertised, ClientError> {
        self.http.call("POST", "/vrouter/routes", Some(ad))
    }

    /// `DELETE /vrouter/routes`.
    pub fn withdraw(&self, w: &Withdraw) -> Result<Withdrawn, ClientError> {
        self.http.call("DELETE", "/vrouter/routes", Some(w))
    }

    /// `GET /vrouter/watch` (long-poll up to `timeout_s`).
    pub fn watch(&self, host: &str, since: u64, timeout_s: u32) -> Result<WatchReply, ClientError> {
        self.http.get(&format!(
            "/vrouter/watch?host={}&since={since}&timeout={timeout_s}",
            urlencode(host)
        ))
    }

    /// `GET /vrouter/agents`.
    pub fn agents(&self) -> Result<AgentList, ClientError> {
        self.http.get("/vrouter/agents")
    }

    /// The VMIs the shim has bound to `host`.
    pub fn bindings_of(&self, host: &str) -> Result<BTreeSet<Uuid>, ClientError> {
        Ok(self
            .agents()?
            .agents
            .into_iter()
            .filter(|a| a.hostname == host)
            .flat_map(|a| a.bindings)
            .collect())
    }

    /// `GET /vrouter/routes`, optionally of one VRF.
    pub fn routes(&self, vrf: Option<&str>) -> Result<RouteList, ClientError> {
        match vrf {
            Some(v) => self
                .http
                .get(&format!("/vrouter/routes?vrf={}", urlencode(v))),
            None => self.http.get("/vrouter/routes"),
        }
    }

    /// `GET /vrouter/bgp/neighbors` (404 when the shim runs no BGP speaker).
    pub fn bgp_neighbors(&self) -> Result<crate::bgp::BgpSummary, ClientError> {
        self.http.get("/vrouter/bgp/neighbors")
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
