//! Id and label allocation: VRF ids, vif ids, nexthop ids and MPLS labels, each keyed by a
//! stable name (network VRF name, interface name, nexthop role), persisted in a small JSON state
//! file so they survive agent restarts.
//!
//! Precedence on (re)start: an id the dataplane already holds for the same object wins (so an
//! agent restarted over a running dataplane changes nothing, even without its state file), then
//! the state file's id (so a restarted dataplane gets the same labels back, which remote hosts
//! still use), then the lowest free id. Labels are taken round-robin from a cursor instead, so a
//! label given up by a removed interface is not handed to the next one while remote hosts may
//! still send to it.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// First label the agent allocates (0..15 are reserved by MPLS).
pub const FIRST_LABEL: u32 = 16;
const STATE_VERSION: u32 = 1;

/// Why an allocation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// No free id left in a table.
    #[error("no free {what} id left (table size {limit})")]
    Exhausted {
        /// Table.
        what: &'static str,
        /// Size.
        limit: u64,
    },
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// I/O.
    #[error("agent state file {path}: {err}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        err: std::io::Error,
    },
    /// Not our format.
    #[error("agent state file {path} is corrupt: {why}")]
    Corrupt {
        /// Path.
        path: String,
        /// Cause.
        why: String,
    },
}

/// One table's allocations.
pub type IdMap<I> = BTreeMap<String, I>;

/// Every allocation the agent owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocations {
    /// Format version.
    pub version: u32,
    /// VRF name -> VRF id.
    pub vrfs: IdMap<u16>,
    /// Interface name -> vif id.
    pub vifs: IdMap<u16>,
    /// Nexthop key -> nexthop id.
    pub nhs: IdMap<u32>,
    /// Label key -> MPLS label.
    pub labels: IdMap<u32>,
    /// Where the next fresh label search starts.
    pub next_label: u32,
}

impl Default for Allocations {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            vrfs: IdMap::new(),
            vifs: IdMap::new(),
            nhs: IdMap::new(),
            labels: IdMap::new(),
            next_label: FIRST_LABEL,
        }
    }
}

/// An id type the allocator hands out.
pub trait Id: Copy + Ord + std::hash::Hash + std::fmt::Debug {
    /// From a search index.
    fn from_u64(v: u64) -> Self;
    /// To a search index.
    fn to_u64(self) -> u64;
}

impl Id for u16 {
    fn from_u64(v: u64) -> Self {
        v as u16
    }
    fn to_u64(self) -> u64 {
        self.into()
    }
}

impl Id for u32 {
    fn from_u64(v: u64) -> Self {
        v as u32
    }
    fn to_u64(self) -> u64 {
        self.into()
    }
}

/// What one allocation round needs from a table.
#[derive(Debug)]
pub struct Request<'a, I> {
    /// Table name for errors.
    pub what: &'static str,
    /// Keys wanted, each with the id the dataplane already holds for that object, if any.
    pub wanted: &'a [(String, Option<I>)],
    /// Ids present in the dataplane (not free for fresh allocation).
    pub in_dataplane: &'a HashSet<I>,
    /// Ids owned by the daemon (never ours, even if the state file says so).
    pub protected: &'a HashSet<I>,
    /// Allowed ids: `first..limit`.
    pub first: u64,
    /// One past the largest id.
    pub limit: u64,
}

/// Assigns an id to every wanted key of one table, following the precedence in the module docs.
/// Keys not wanted stay in `table` (the caller prunes with [`Allocations::retain`]); `cursor`
/// makes fresh ids round-robin instead of lowest-free.
pub fn assign<I: Id>(
    table: &mut IdMap<I>,
    req: &Request<'_, I>,
    mut cursor: Option<&mut u32>,
) -> Result<(), AllocError> {
    // 1. Adopt what the dataplane holds; whoever else claimed that id in the state file loses it.
    for (key, cand) in req.wanted {
        let Some(c) = *cand else { continue };
        if req.protected.contains(&c) || c.to_u64() < req.first || c.to_u64() >= req.limit {
            continue;
        }
        if table.get(key) == Some(&c) {
            continue;
        }
        table.retain(|k, v| *v != c || k == key);
        table.insert(key.clone(), c);
    }
    // 2. Keep state-file ids unless they are out of range or the daemon's. Two keys claiming
    //    one id (a hand-edited file) keep the first.
    let mut used: HashSet<I> = HashSet::new();
    for (key, _) in req.wanted {
        if let Some(&v) = table.get(key) {
            let ok = !req.protected.contains(&v)
                && v.to_u64() >= req.first
                && v.to_u64() < req.limit
                && used.insert(v);
            if !ok {
                table.remove(key);
            }
        }
    }
    // Ids held by keys not wanted this round stay reserved until pruned, so pruning later does
    // not depend on order.
    used.extend(table.values().copied());
    // 3. Fresh ids.
    let span = req.limit.saturating_sub(req.first);
    // Without a cursor the search resumes after the last fresh id (everything below it is
    // taken), so a thousand new interfaces cost a thousand probes, not half a million.
    let mut low = req.first;
    for (key, _) in req.wanted {
        if table.contains_key(key) {
            continue;
        }
        let start = match cursor.as_deref() {
            Some(c) if u64::from(*c) >= req.first && u64::from(*c) < req.limit => u64::from(*c),
            Some(_) => req.first,
            None => low,
        };
        let mut found = None;
        for i in 0..span {
            let v = req.first + (start - req.first + i) % span;
            let id = I::from_u64(v);
            if !used.contains(&id)
                && !req.in_dataplane.contains(&id)
                && !req.protected.contains(&id)
            {
                found = Some(id);
                break;
            }
        }
        let Some(id) = found else {
            return Err(AllocError::Exhausted {
                what: req.what,
                limit: req.limit,
            });
        };
        used.insert(id);
        table.insert(key.clone(), id);
        low = (id.to_u64() + 1)
            .min(req.limit.saturating_sub(1))
            .max(req.first);
        if let Some(c) = cursor.as_deref_mut() {
            *c = (id.to_u64() + 1) as u32;
        }
    }
    Ok(())
}

impl Allocations {
    /// Drops every allocation whose key is not in the given sets (the object was removed from
    /// the configuration).
    pub fn retain(
        &mut self,
        vrfs: &HashSet<String>,
        vifs: &HashSet<String>,
        nhs: &HashSet<String>,
        labels: &HashSet<String>,
    ) {
        self.vrfs.retain(|k, _| vrfs.contains(k));
        self.vifs.retain(|k, _| vifs.contains(k));
        self.nhs.retain(|k, _| nhs.contains(k));
        self.labels.retain(|k, _| labels.contains(k));
    }

    /// Reads the state file; a missing file is an empty allocation.
    pub fn load(path: &Path) -> Result<Self, StateFileError> {
        let p = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(err) => return Err(StateFileError::Io { path: p, err }),
        };
        let a: Self = serde_json::from_str(&text).map_err(|e| StateFileError::Corrupt {
            path: p.clone(),
            why: e.to_string(),
        })?;
        if a.version != STATE_VERSION {
            return Err(StateFileError::Corrupt {
                path: p,
                why: format!("version {} (this agent writes {STATE_VERSION})", a.version),
            });
        }
        Ok(a)
    }

    /// Writes the state file atomically (temp file, fsync, rename), so a crash mid-write leaves
    /// the old allocations rather than none.
    pub fn save(&self, path: &Path) -> Result<(), StateFileError> {
        use std::io::Write;
        let p = path.display().to_string();
        let io = |err| StateFileError::Io {
            path: p.clone(),
            err,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(self).map_err(|e| StateFileError::Corrupt {
            path: p.clone(),
            why: e.to_string(),
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a, I>(
        wanted: &'a [(String, Option<I>)],
        in_dp: &'a HashSet<I>,
        prot: &'a HashSet<I>,
        limit: u64,
    ) -> Request<'a, I> {
        Request {
            what: "test",
            wanted,
            in_dataplane: in_dp,
            protected: prot,
            first: 1,
            limit,
        }
    }

    #[test]
    fn dataplane_wins_then_state_then_fresh() {
        let mut t: IdMap<u16> = [("a".to_string(), 5), ("b".to_string(), 7)].into();
        let wanted = vec![
            ("a".to_string(), None),
            ("b".to_string(), Some(5)),
            ("c".to_string(), None),
        ];
        let in_dp: HashSet<u16> = [5, 1].into();
        assign(&mut t, &req(&wanted, &in_dp, &HashSet::new(), 100), None).expect("room");
        assert_eq!(t["b"], 5, "adopted from the dataplane");
        assert_ne!(t["a"], 5);
        assert!(!in_dp.contains(&t["a"]) && !in_dp.contains(&t["c"]));
        assert_ne!(t["a"], t["c"]);
    }

    #[test]
    fn protected_ids_are_never_kept() {
        let mut t: IdMap<u16> = [("a".to_string(), 2)].into();
        let wanted = vec![("a".to_string(), Some(2))];
        let prot: HashSet<u16> = [2].into();
        assign(&mut t, &req(&wanted, &prot, &prot, 100), None).expect("room");
        assert_ne!(t["a"], 2);
    }

    #[test]
    fn labels_round_robin_and_exhaustion() {
        let mut t: IdMap<u32> = IdMap::new();
        let mut cursor = 1;
        let wanted = vec![("x".to_string(), None)];
        let none = HashSet::new();
        assign(&mut t, &req(&wanted, &none, &none, 4), Some(&mut cursor)).expect("room");
        assert_eq!((t["x"], cursor), (1, 2));
        t.clear();
        assign(&mut t, &req(&wanted, &none, &none, 4), Some(&mut cursor)).expect("room");
        assert_eq!(t["x"], 2, "a freed label is not reused at once");
        let many: Vec<_> = (0..4).map(|i| (i.to_string(), None)).collect();
        let e = assign(&mut t, &req(&many, &none, &none, 4), Some(&mut cursor)).expect_err("full");
        assert_eq!(e.to_string(), "no free test id left (table size 4)");
    }

    #[test]
    fn state_file_round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("sub/agent-state.json");
        assert_eq!(
            Allocations::load(&p).expect("missing"),
            Allocations::default()
        );
        let mut a = Allocations::default();
        a.labels.insert("if/vif1.0".into(), 17);
        a.save(&p).expect("save");
        assert_eq!(Allocations::load(&p).expect("load"), a);
        std::fs::write(&p, "{").expect("write");
        assert!(matches!(
            Allocations::load(&p),
            Err(StateFileError::Corrupt { .. })
        ));
    }
}
