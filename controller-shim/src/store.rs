// SPDX-License-Identifier: Apache-2.0
//! Durable key/value storage behind one trait: SQLite (default, one file) and etcd (several
//! shim instances sharing one cloud).
//!
//! The core keeps the whole state in memory and the store is its write-ahead copy: a mutation
//! is acknowledged only after its [`Batch`] is committed. Keys are flat strings (`obj/<uuid>`,
//! `meta/rev`, `agent/<host>`, `route/...`, `view/...`), values JSON bytes.

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

/// Store key of the revision counter. The store owns it: shared stores guard every commit with
/// it, and [`Store::stored_rev`] reads it.
pub const REV_KEY: &str = "meta/rev";

/// Writes produced by one mutation: `(key, Some(value))` puts, `(key, None)` deletes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Operations in order; a later one on the same key wins.
    pub ops: Vec<(String, Option<Vec<u8>>)>,
}

impl Batch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// The revision counter and the writes queued since the caller last took them: the one handle
/// every part of the state (objects, agents) records its mutations through, so none of them
/// needs the others to persist.
#[derive(Debug, Default)]
pub struct Journal {
    rev: u64,
    pending: Batch,
}

impl Journal {
    /// A journal at revision `rev` with nothing queued (after a load).
    pub fn at(rev: u64) -> Journal {
        Journal {
            rev,
            pending: Batch::default(),
        }
    }

    /// Revision of the last mutation.
    pub fn rev(&self) -> u64 {
        self.rev
    }

    /// Starts a mutation: bumps the revision and queues its record ([`REV_KEY`]).
    pub fn bump(&mut self) -> u64 {
        self.rev += 1;
        let v = self.rev.to_string().into_bytes();
        self.pending.ops.retain(|(k, _)| k != REV_KEY);
        self.queue(REV_KEY.to_string(), Some(v));
        self.rev
    }

    /// Queues a put (`Some`) or a delete (`None`) of `key`.
    pub fn queue(&mut self, key: String, val: Option<Vec<u8>>) {
        self.pending.ops.push((key, val));
    }

    /// Takes the writes queued so far (the caller persists them).
    pub fn take(&mut self) -> Batch {
        std::mem::take(&mut self.pending)
    }
}

/// Storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// etcd transport or protocol error.
    #[error("etcd: {0}")]
    Etcd(String),
    /// Another shim instance committed first; reload and retry.
    #[error("concurrent update by another shim instance")]
    Conflict,
    /// Bad `--store` argument.
    #[error("bad store spec {0:?} (want sqlite:PATH or etcd:http://HOST:PORT)")]
    Spec(String),
}

/// A durable key/value store.
pub trait Store: Send {
    /// Every record.
    fn load(&mut self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Atomically applies `batches` in order. `base_rev` is the revision the first batch was
    /// computed from; shared stores refuse the commit with [`StoreError::Conflict`] when the
    /// stored revision differs (another instance wrote in between).
    fn commit(&mut self, base_rev: u64, batches: &[Batch]) -> Result<(), StoreError>;

    /// True when other processes may write the same store (then the caller checks
    /// [`Store::stored_rev`] before trusting its in-memory copy).
    fn shared(&self) -> bool;

    /// Revision last committed by anyone.
    fn stored_rev(&mut self) -> Result<u64, StoreError>;
}

/// Opens a store from its command-line form: `sqlite:PATH` or `etcd:URL[,URL...]` (the
/// cluster's client URLs, `http://HOST:PORT`, tried in turn when one does not answer).
pub fn open(spec: &str) -> Result<Box<dyn Store>, StoreError> {
    if let Some(path) = spec.strip_prefix("sqlite:") {
        Ok(Box::new(SqliteStore::open(Path::new(path))?))
    } else if let Some(url) = spec.strip_prefix("etcd:") {
        Ok(Box::new(EtcdStore::new(url, "/vrouter-shim/")?))
    } else {
        Err(StoreError::Spec(spec.to_string()))
    }
}

/// SQLite in WAL mode with `synchronous=FULL`: a committed transaction survives power loss,
/// and one fsync covers every batch of a group commit.
#[derive(Debug)]
pub struct SqliteStore {
    conn: rusqlite::Connection,
}

impl SqliteStore {
    /// Opens or creates the database file.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = rusqlite::Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;",
        )?;
        Ok(SqliteStore { conn })
    }
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut st = self.conn.prepare("SELECT k, v FROM kv")?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn commit(&mut self, _base_rev: u64, batches: &[Batch]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut put = tx.prepare_cached("INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)")?;
            let mut del = tx.prepare_cached("DELETE FROM kv WHERE k = ?1")?;
            for (k, v) in batches.iter().flat_map(|b| b.ops.iter()) {
                match v {
                    Some(v) => put.execute(rusqlite::params![k, v])?,
                    None => del.execute([k])?,
                };
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn shared(&self) -> bool {
        false
    }

    fn stored_rev(&mut self) -> Result<u64, StoreError> {
        let v: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT v FROM kv WHERE k = ?1", [REV_KEY], |r| r.get(0))
            .map(Some)
            .or_else(|e| {
                if e == rusqlite::Error::QueryReturnedNoRows {
                    Ok(None)
                } else {
                    Err(e)
                }
            })?;
        Ok(parse_rev(v.as_deref()))
    }
}

fn parse_rev(v: Option<&[u8]>) -> u64 {
    v.and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// etcd v3 through its JSON gateway (`/v3/kv/*`, base64 keys and values): no gRPC stack.
///
/// A commit is one transaction guarded by `meta/rev`, so two shim instances never interleave
/// half-applied batches; the loser gets [`StoreError::Conflict`]. A commit is never split: etcd
/// refuses a transaction of more than `--max-txn-ops` operations (128 by default), and then
/// nothing is written and the error says how many operations the mutation needed, so run etcd
/// with a larger `--max-txn-ops` (10000) for big agent churn.
///
/// Several endpoints (one per cluster member) may be given: a call goes to the one that last
/// answered, and moves on to the next only when it cannot connect (a request that reached a
/// member and timed out is not sent again elsewhere: it may have been applied). Every call is
/// bounded by [`ETCD_CONNECT_TIMEOUT`] and [`ETCD_TIMEOUT`], so a cluster without quorum gives
/// an error (503 to the client) within seconds instead of hanging.
#[derive(Debug)]
pub struct EtcdStore {
    agent: ureq::Agent,
    urls: Vec<String>,
    /// Index in `urls` of the endpoint that last answered.
    current: std::sync::atomic::AtomicUsize,
    prefix: String,
}

/// Connecting to one endpoint (loopback or a LAN: a member that does not accept in 1 s is
/// down, and the next one is tried).
pub const ETCD_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// One request, from connect to the last byte of the reply (etcd's own request timeout under
/// quorum loss is about 7 s; an operator's client gives up well before 30).
pub const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

impl EtcdStore {
    /// A client for the etcd cluster at `urls` (comma-separated client URLs, e.g.
    /// `http://127.0.0.1:2379,http://127.0.0.1:22379`), keys under `prefix`.
    pub fn new(urls: &str, prefix: &str) -> Result<EtcdStore, StoreError> {
        let urls: Vec<String> = urls
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .collect();
        if let Some(bad) = urls
            .iter()
            .find(|u| !u.starts_with("http://") || u.len() == "http://".len())
        {
            return Err(StoreError::Spec(format!(
                "etcd:{bad} (each endpoint is http://HOST:PORT, several separated by commas)"
            )));
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(ETCD_CONNECT_TIMEOUT)
            .timeout(ETCD_TIMEOUT)
            .build();
        Ok(EtcdStore {
            agent,
            urls,
            current: std::sync::atomic::AtomicUsize::new(0),
            prefix: prefix.to_string(),
        })
    }

    /// POSTs `body` to `path` on the endpoint that last answered, or on the next ones in turn
    /// while they cannot be connected to.
    fn call(&self, path: &str, body: &Value) -> Result<Value, StoreError> {
        use std::sync::atomic::Ordering;
        let first = self.current.load(Ordering::Relaxed);
        let mut unreachable = Vec::new();
        for i in 0..self.urls.len() {
            let at = (first + i) % self.urls.len();
            let url = &self.urls[at];
            let sent = self
                .agent
                .post(&format!("{url}{path}"))
                .set("Content-Type", "application/json")
                .send_string(&body.to_string());
            let resp = match sent {
                Ok(r) => r,
                Err(ureq::Error::Transport(t))
                    if matches!(
                        t.kind(),
                        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns
                    ) =>
                {
                    unreachable.push(format!("{url}: {t}"));
                    continue;
                }
                Err(ureq::Error::Status(code, r)) => {
                    // etcd's gateway explains a refusal in the body (`{"error": ...}`), then
                    // sends a trailer ureq does not read: keep what came before it.
                    let mut why = Vec::new();
                    let _ = std::io::Read::read_to_end(
                        &mut std::io::Read::take(r.into_reader(), 4096),
                        &mut why,
                    );
                    return Err(StoreError::Etcd(format!(
                        "{url}{path}: HTTP {code}: {}",
                        String::from_utf8_lossy(&why).trim()
                    )));
                }
                Err(e) => return Err(StoreError::Etcd(format!("{url}{path}: {e}"))),
            };
            if at != first {
                self.current.store(at, Ordering::Relaxed);
                log::warn!(
                    "etcd: using {url} ({} did not answer)",
                    unreachable.join("; ")
                );
            }
            let text = resp
                .into_string()
                .map_err(|e| StoreError::Etcd(format!("{url}{path}: {e}")))?;
            return serde_json::from_str(&text)
                .map_err(|e| StoreError::Etcd(format!("{url}{path}: bad reply: {e}")));
        }
        Err(StoreError::Etcd(format!(
            "{path}: no etcd endpoint answers ({})",
            unreachable.join("; ")
        )))
    }

    fn key(&self, k: &str) -> String {
        B64.encode(format!("{}{k}", self.prefix))
    }

    fn rev_compare(&self, base_rev: u64) -> Value {
        if base_rev == 0 {
            json!({"key": self.key(REV_KEY), "target": "VERSION", "result": "EQUAL", "version": "0"})
        } else {
            json!({"key": self.key(REV_KEY), "target": "VALUE", "result": "EQUAL",
                   "value": B64.encode(base_rev.to_string())})
        }
    }
}

/// The smallest key greater than every key starting with `p` (etcd's prefix range end).
fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Store for EtcdStore {
    fn load(&mut self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let end = B64.encode(prefix_end(self.prefix.as_bytes()));
        let mut start = self.prefix.as_bytes().to_vec();
        let mut out = Vec::new();
        loop {
            let reply = self.call(
                "/v3/kv/range",
                &json!({"key": B64.encode(&start), "range_end": end, "limit": "1000"}),
            )?;
            let kvs = reply
                .get("kvs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for kv in &kvs {
                let dec = |f: &str| -> Result<Vec<u8>, StoreError> {
                    B64.decode(kv.get(f).and_then(Value::as_str).unwrap_or(""))
                        .map_err(|e| StoreError::Etcd(format!("bad base64 in range reply: {e}")))
                };
                let k = dec("key")?;
                let k = String::from_utf8_lossy(&k[self.prefix.len().min(k.len())..]).into_owned();
                out.push((k, dec("value")?));
            }
            let more = reply.get("more").and_then(Value::as_bool).unwrap_or(false);
            match (more, out.last()) {
                (true, Some((k, _))) => {
                    start = format!("{}{k}\0", self.prefix).into_bytes();
                }
                _ => break,
            }
        }
        Ok(out)
    }

    fn commit(&mut self, base_rev: u64, batches: &[Batch]) -> Result<(), StoreError> {
        // Later writes to a key win: keep only the last op per key, in first-seen order.
        let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let all: Vec<&(String, Option<Vec<u8>>)> =
            batches.iter().flat_map(|b| b.ops.iter()).collect();
        for (i, (k, _)) in all.iter().enumerate() {
            last.insert(k.as_str(), i);
        }
        let ops: Vec<Value> = all
            .iter()
            .enumerate()
            .filter(|(i, (k, _))| last.get(k.as_str()) == Some(i))
            .map(|(_, (k, v))| match v {
                Some(v) => json!({"request_put": {"key": self.key(k), "value": B64.encode(v)}}),
                None => json!({"request_delete_range": {"key": self.key(k)}}),
            })
            .collect();
        let n = ops.len();
        let txn = json!({"compare": [self.rev_compare(base_rev)], "success": ops});
        let reply = self.call("/v3/kv/txn", &txn).map_err(|e| match e {
            StoreError::Etcd(m) if m.contains("too many operations") => StoreError::Etcd(format!(
                "a mutation of {n} operations is more than etcd's --max-txn-ops allows \
                 (128 by default): nothing was written; run etcd with --max-txn-ops {} or more",
                n.next_power_of_two().max(1024)
            )),
            e => e,
        })?;
        if reply.get("succeeded").and_then(Value::as_bool) != Some(true) {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    fn shared(&self) -> bool {
        true
    }

    fn stored_rev(&mut self) -> Result<u64, StoreError> {
        let reply = self.call("/v3/kv/range", &json!({"key": self.key(REV_KEY)}))?;
        let v = reply
            .pointer("/kvs/0/value")
            .and_then(Value::as_str)
            .and_then(|v| B64.decode(v).ok());
        Ok(parse_rev(v.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_round_trip() {
        let dir = std::env::temp_dir().join(format!("shim-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("t.db");
        let _ = std::fs::remove_file(&path);
        let mut s = SqliteStore::open(&path).expect("open");
        let b = Batch {
            ops: vec![
                ("a".into(), Some(b"1".to_vec())),
                ("b".into(), Some(b"2".to_vec())),
                (REV_KEY.into(), Some(b"7".to_vec())),
            ],
        };
        s.commit(
            0,
            &[
                b,
                Batch {
                    ops: vec![("a".into(), None)],
                },
            ],
        )
        .expect("commit");
        drop(s);
        let mut s = SqliteStore::open(&path).expect("reopen");
        let mut all = s.load().expect("load");
        all.sort();
        assert_eq!(
            all,
            vec![
                ("b".to_string(), b"2".to_vec()),
                (REV_KEY.to_string(), b"7".to_vec())
            ]
        );
        assert_eq!(s.stored_rev().expect("rev"), 7);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn etcd_endpoints_are_a_comma_separated_list_of_http_urls() {
        let s = EtcdStore::new("http://127.0.0.1:2379/, http://10.0.0.2:2379", "/p/").expect("two");
        assert_eq!(s.urls, ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]);
        for bad in [
            "127.0.0.1:2379",
            "http://a:1,,http://b:2",
            "http://a:1,https://b:2",
            "http://",
        ] {
            let e = EtcdStore::new(bad, "/p/").expect_err(bad).to_string();
            assert!(e.contains("http://HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_dead_endpoint_is_skipped_and_none_answering_is_a_clear_error() {
        // Two loopback ports nobody listens on (bound, then closed).
        let dead = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| format!("http://{a}"))
                .expect("free port")
        };
        let mut s = EtcdStore::new(&format!("{},{}", dead(), dead()), "/p/").expect("store");
        let t = std::time::Instant::now();
        let e = s.stored_rev().expect_err("nothing answers").to_string();
        assert!(e.contains("no etcd endpoint answers"), "{e}");
        assert!(
            t.elapsed() < ETCD_TIMEOUT,
            "connection refused is immediate"
        );
    }

    #[test]
    fn prefix_end_increments() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(&[0x61, 0xff]), vec![0x62]);
    }
}
