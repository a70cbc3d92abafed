// SPDX-License-Identifier: Apache-2.0
//! The dev daemon's hierarchical store, with no I/O.
//!
//! # Design
//! Nodes live in a flat map keyed by canonical absolute path; each node keeps the names of its
//! children, so `DIRECTORY` is a lookup and `RM` walks only the subtree it removes.
//!
//! Every operation runs inside a [`Tx`]: an overlay of modified nodes on top of the committed
//! store plus a *read set* (the generation of every node the transaction looked at, at the time it
//! first looked). Operations outside a transaction use a throw-away `Tx` that is committed at once.
//! Committing checks the read set against the store: if any node seen by the transaction was
//! modified, created or removed since, the commit fails with `EAGAIN` and the client retries the
//! whole transaction (what libxenstore and our client do). Creating or removing a child modifies
//! the parent (its child list), so a transaction that listed a directory conflicts with one that
//! changed that directory. This is optimistic concurrency with serialisable results, the same
//! contract as C xenstored's generation-count check, at per-node rather than per-store
//! granularity, so unrelated transactions (two vifs being plugged at once) do not conflict.
//!
//! # Permissions
//! A privileged caller (dom0) may do anything. Others are checked against the node's
//! [`Perms`]: reading needs read access on the node; writing an existing node, removing it or
//! changing its perms needs write access on it; creating a node needs write access on the nearest
//! existing ancestor. New nodes inherit their parent's perms (owned by the creator when the
//! creator is unprivileged), as in C xenstored. The root is created `r0` (owner dom0, everyone
//! may read), so by default unprivileged callers can read everything and write nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::perms::{Access, Perms};
use crate::wire::XsErrno;

/// Upper bound on the number of nodes, so that a runaway or hostile client cannot exhaust memory.
pub const MAX_NODES: usize = 1_000_000;

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The caller's domain id (0 for dom0).
    pub domid: u32,
    /// Privileged callers bypass permission checks (dom0 tools, root on the unix socket).
    pub privileged: bool,
}

impl Caller {
    /// Dom0, privileged.
    pub const DOM0: Caller = Caller {
        domid: 0,
        privileged: true,
    };
}

#[derive(Debug, Clone)]
struct Node {
    value: Vec<u8>,
    perms: Perms,
    /// Store generation of the last change to this node (value, perms or child list).
    gen: u64,
    children: BTreeSet<String>,
}

/// A change that fires watches once it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `path` was written/created/had its perms changed: fires watches on it and its ancestors.
    Modified(String),
    /// `path` and its subtree were removed: fires watches on it and its ancestors, and every
    /// watch strictly below it (with the watch's own path).
    Removed(String),
}

/// The committed store.
#[derive(Debug)]
pub struct Store {
    nodes: HashMap<String, Node>,
    gen: u64,
}

/// An open transaction (or the throw-away one behind a single operation).
#[derive(Debug, Default)]
pub struct Tx {
    /// `Some(node)` = created or modified; `None` = removed.
    overlay: BTreeMap<String, Option<Node>>,
    /// Generation of each node at first access (`None` = did not exist).
    seen: HashMap<String, Option<u64>>,
    changes: Vec<Change>,
}

impl Tx {
    /// An empty transaction.
    pub fn new() -> Tx {
        Tx::default()
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// A store holding `/` (perms `r0`), `/local`, `/local/domain`, `/local/domain/0` and `/tool`.
    pub fn new() -> Store {
        let mut s = Store {
            nodes: HashMap::new(),
            gen: 1,
        };
        s.nodes.insert(
            "/".to_string(),
            Node {
                value: Vec::new(),
                perms: Perms::new(0, Access::Read),
                gen: 1,
                children: BTreeSet::new(),
            },
        );
        let mut tx = Tx::new();
        for p in ["/local/domain/0", "/tool"] {
            // Cannot fail: dom0 is privileged and the paths are valid.
            let _ = s.op(&mut tx, Caller::DOM0).mkdir(p);
        }
        let _ = s.commit(tx);
        s
    }

    /// Number of nodes (for tests and leak checks).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: the root always exists.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Operations on behalf of `caller` inside `tx`.
    pub fn op<'a>(&'a self, tx: &'a mut Tx, caller: Caller) -> Ops<'a> {
        Ops {
            store: self,
            tx,
            caller,
        }
    }

    /// Commits `tx`, returning the changes that fire watches.
    ///
    /// # Errors
    /// `EAGAIN` if a node the transaction looked at changed since (the transaction is dropped).
    pub fn commit(&mut self, tx: Tx) -> Result<Vec<Change>, XsErrno> {
        for (path, seen) in &tx.seen {
            if self.nodes.get(path).map(|n| n.gen) != *seen {
                return Err(XsErrno::Eagain);
            }
        }
        if tx.overlay.is_empty() {
            return Ok(tx.changes);
        }
        self.gen += 1;
        for (path, node) in tx.overlay {
            match node {
                Some(mut n) => {
                    n.gen = self.gen;
                    self.nodes.insert(path, n);
                }
                None => {
                    self.nodes.remove(&path);
                }
            }
        }
        Ok(tx.changes)
    }

    /// Whether `path` exists in the committed store (tests, watch permission checks).
    pub fn exists(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    /// Whether `caller` may read the committed node at `path` (true if it does not exist).
    pub fn readable_by(&self, path: &str, caller: Caller) -> bool {
        if caller.privileged {
            return true;
        }
        match self.nodes.get(path) {
            None => true,
            Some(n) => n.perms.access_for(caller.domid).can_read(),
        }
    }
}

/// The parent of a canonical path (`None` for `/`).
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Operations of one caller inside one transaction.
#[derive(Debug)]
pub struct Ops<'a> {
    store: &'a Store,
    tx: &'a mut Tx,
    caller: Caller,
}

impl Ops<'_> {
    fn note(&mut self, path: &str) {
        if !self.tx.seen.contains_key(path) {
            let g = self.store.nodes.get(path).map(|n| n.gen);
            self.tx.seen.insert(path.to_string(), g);
        }
    }

    fn peek(&self, path: &str) -> Option<&Node> {
        match self.tx.overlay.get(path) {
            Some(n) => n.as_ref(),
            None => self.store.nodes.get(path),
        }
    }

    fn get(&mut self, path: &str) -> Option<&Node> {
        self.note(path);
        self.peek(path)
    }

    fn put(&mut self, path: &str, node: Node) {
        self.note(path);
        self.tx.overlay.insert(path.to_string(), Some(node));
    }

    fn del(&mut self, path: &str) {
        self.note(path);
        self.tx.overlay.insert(path.to_string(), None);
    }

    fn check(&self, node: &Node, want_write: bool) -> Result<(), XsErrno> {
        if self.caller.privileged {
            return Ok(());
        }
        let a = node.perms.access_for(self.caller.domid);
        let ok = if want_write {
            a.can_write()
        } else {
            a.can_read()
        };
        if ok {
            Ok(())
        } else {
            Err(XsErrno::Eacces)
        }
    }

    fn get_checked(&mut self, path: &str, want_write: bool) -> Result<Node, XsErrno> {
        let node = self.get(path).cloned().ok_or(XsErrno::Enoent)?;
        self.check(&node, want_write)?;
        Ok(node)
    }

    /// `READ`.
    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, XsErrno> {
        Ok(self.get_checked(path, false)?.value)
    }

    /// `DIRECTORY`.
    pub fn directory(&mut self, path: &str) -> Result<Vec<String>, XsErrno> {
        Ok(self
            .get_checked(path, false)?
            .children
            .into_iter()
            .collect())
    }

    /// `DIRECTORY_PART`: the node's generation and its children, for libxenstore's chunked listing.
    pub fn directory_with_gen(&mut self, path: &str) -> Result<(u64, Vec<String>), XsErrno> {
        let n = self.get_checked(path, false)?;
        Ok((n.gen, n.children.into_iter().collect()))
    }

    /// `GET_PERMS`.
    pub fn get_perms(&mut self, path: &str) -> Result<Perms, XsErrno> {
        Ok(self.get_checked(path, false)?.perms)
    }

    /// `WRITE`: sets the value, creating the node and any missing ancestors.
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), XsErrno> {
        if let Some(mut n) = self.get(path).cloned() {
            self.check(&n, true)?;
            n.value = value.to_vec();
            self.put(path, n);
        } else {
            self.create(path, value)?;
        }
        self.tx.changes.push(Change::Modified(path.to_string()));
        Ok(())
    }

    /// `MKDIR`: creates the node (empty value) if missing; a no-op otherwise.
    pub fn mkdir(&mut self, path: &str) -> Result<(), XsErrno> {
        if let Some(n) = self.get(path).cloned() {
            return self.check(&n, false);
        }
        self.create(path, b"")?;
        self.tx.changes.push(Change::Modified(path.to_string()));
        Ok(())
    }

    fn create(&mut self, path: &str, value: &[u8]) -> Result<(), XsErrno> {
        // Find the nearest existing ancestor; it must be writable.
        let mut missing = vec![path.to_string()];
        let mut anc = parent(path).ok_or(XsErrno::Einval)?.to_string();
        let anc_node = loop {
            if let Some(n) = self.get(&anc).cloned() {
                break n;
            }
            missing.push(anc.clone());
            anc = parent(&anc).ok_or(XsErrno::Einval)?.to_string();
        };
        self.check(&anc_node, true)?;
        if self.store.nodes.len() + missing.len() > MAX_NODES {
            return Err(XsErrno::Enospc);
        }
        let mut parent_path = anc;
        let mut parent_node = anc_node;
        for p in missing.iter().rev() {
            let perms = if self.caller.privileged {
                parent_node.perms.clone()
            } else {
                parent_node.perms.with_owner(self.caller.domid)
            };
            parent_node.children.insert(basename(p).to_string());
            self.put(&parent_path, parent_node);
            let v = if p == path {
                value.to_vec()
            } else {
                Vec::new()
            };
            parent_node = Node {
                value: v,
                perms,
                gen: 0,
                children: BTreeSet::new(),
            };
            parent_path = p.clone();
        }
        self.put(&parent_path, parent_node);
        Ok(())
    }

    /// `RM`: removes the node and its subtree. Removing a missing node whose parent exists
    /// succeeds (C xenstored semantics, which `xenstore-rm` relies on).
    pub fn rm(&mut self, path: &str) -> Result<(), XsErrno> {
        let Some(par) = parent(path) else {
            return Err(XsErrno::Einval);
        };
        let Some(node) = self.get(path).cloned() else {
            return match self.get(par) {
                Some(_) => Ok(()),
                None => Err(XsErrno::Enoent),
            };
        };
        self.check(&node, true)?;
        let mut stack = vec![(path.to_string(), node)];
        while let Some((p, n)) = stack.pop() {
            for c in &n.children {
                let cp = join(&p, c);
                if let Some(cn) = self.get(&cp).cloned() {
                    stack.push((cp, cn));
                }
            }
            self.del(&p);
        }
        if let Some(mut pn) = self.get(par).cloned() {
            pn.children.remove(basename(path));
            self.put(par, pn);
        }
        self.tx.changes.push(Change::Removed(path.to_string()));
        Ok(())
    }

    /// `SET_PERMS`. An unprivileged caller may not give the node away.
    pub fn set_perms(&mut self, path: &str, perms: Perms) -> Result<(), XsErrno> {
        let mut n = self.get_checked(path, true)?;
        if !self.caller.privileged && perms.owner() != n.perms.owner() {
            return Err(XsErrno::Eperm);
        }
        n.perms = perms;
        self.put(path, n);
        self.tx.changes.push(Change::Modified(path.to_string()));
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GUEST: Caller = Caller {
        domid: 7,
        privileged: false,
    };

    fn run<R>(s: &mut Store, c: Caller, f: impl FnOnce(&mut Ops<'_>) -> R) -> R {
        let mut tx = Tx::new();
        let r = f(&mut s.op(&mut tx, c));
        s.commit(tx).unwrap();
        r
    }

    #[test]
    fn test_write_creates_ancestors_and_lists() {
        let mut s = Store::new();
        run(&mut s, Caller::DOM0, |o| o.write("/a/b/c", b"v")).unwrap();
        assert_eq!(
            run(&mut s, Caller::DOM0, |o| o.read("/a/b/c")).unwrap(),
            b"v"
        );
        assert_eq!(run(&mut s, Caller::DOM0, |o| o.read("/a/b")).unwrap(), b"");
        assert_eq!(
            run(&mut s, Caller::DOM0, |o| o.directory("/a")).unwrap(),
            vec!["b"]
        );
        assert!(run(&mut s, Caller::DOM0, |o| o.directory("/"))
            .unwrap()
            .contains(&"a".to_string()));
        assert_eq!(
            run(&mut s, Caller::DOM0, |o| o.read("/nope")),
            Err(XsErrno::Enoent)
        );
    }

    #[test]
    fn test_rm_subtree_and_missing() {
        let mut s = Store::new();
        let before = s.len();
        run(&mut s, Caller::DOM0, |o| o.write("/a/b/c", b"v")).unwrap();
        run(&mut s, Caller::DOM0, |o| o.write("/a/d", b"v")).unwrap();
        run(&mut s, Caller::DOM0, |o| o.rm("/a")).unwrap();
        assert_eq!(s.len(), before);
        assert_eq!(run(&mut s, Caller::DOM0, |o| o.rm("/a")), Ok(()));
        assert_eq!(
            run(&mut s, Caller::DOM0, |o| o.rm("/a/b")),
            Err(XsErrno::Enoent)
        );
        assert_eq!(
            run(&mut s, Caller::DOM0, |o| o.rm("/")),
            Err(XsErrno::Einval)
        );
    }

    #[test]
    fn test_unprivileged_reads_but_cannot_write() {
        let mut s = Store::new();
        run(&mut s, Caller::DOM0, |o| o.write("/a", b"v")).unwrap();
        assert_eq!(run(&mut s, GUEST, |o| o.read("/a")).unwrap(), b"v");
        assert_eq!(
            run(&mut s, GUEST, |o| o.write("/a", b"x")),
            Err(XsErrno::Eacces)
        );
        assert_eq!(
            run(&mut s, GUEST, |o| o.write("/a/new", b"x")),
            Err(XsErrno::Eacces)
        );
        assert_eq!(run(&mut s, GUEST, |o| o.rm("/a")), Err(XsErrno::Eacces));
        // Grant domain 7 write access on /a: it may now create below it, owning what it creates.
        let p = Perms::parse(["r0", "b7"]).unwrap();
        run(&mut s, Caller::DOM0, |o| o.set_perms("/a", p)).unwrap();
        run(&mut s, GUEST, |o| o.write("/a/new", b"x")).unwrap();
        assert_eq!(
            run(&mut s, GUEST, |o| o.get_perms("/a/new"))
                .unwrap()
                .owner(),
            7
        );
        // But may not give its node away.
        let give = Perms::parse(["b8"]).unwrap();
        assert_eq!(
            run(&mut s, GUEST, |o| o.set_perms("/a/new", give)),
            Err(XsErrno::Eperm)
        );
        // A node readable by nobody else is hidden from the guest.
        run(&mut s, Caller::DOM0, |o| o.write("/secret", b"s")).unwrap();
        run(&mut s, Caller::DOM0, |o| {
            o.set_perms("/secret", Perms::new(0, Access::None))
        })
        .unwrap();
        assert_eq!(
            run(&mut s, GUEST, |o| o.read("/secret")),
            Err(XsErrno::Eacces)
        );
    }

    #[test]
    fn test_transaction_isolation_and_conflict() {
        let mut s = Store::new();
        run(&mut s, Caller::DOM0, |o| o.write("/x", b"1")).unwrap();
        let mut t1 = Tx::new();
        assert_eq!(s.op(&mut t1, Caller::DOM0).read("/x").unwrap(), b"1");
        s.op(&mut t1, Caller::DOM0).write("/y", b"t1").unwrap();
        // Not visible outside before commit.
        assert_eq!(
            run(&mut s, Caller::DOM0, |o| o.read("/y")),
            Err(XsErrno::Enoent)
        );
        // A concurrent write to /x makes t1 conflict.
        run(&mut s, Caller::DOM0, |o| o.write("/x", b"2")).unwrap();
        assert_eq!(s.commit(t1).unwrap_err(), XsErrno::Eagain);
        assert_eq!(
            run(&mut s, Caller::DOM0, |o| o.read("/y")),
            Err(XsErrno::Enoent)
        );
    }

    #[test]
    fn test_disjoint_transactions_both_commit() {
        let mut s = Store::new();
        run(&mut s, Caller::DOM0, |o| o.mkdir("/vif/1")).unwrap();
        run(&mut s, Caller::DOM0, |o| o.mkdir("/vif/2")).unwrap();
        let mut t1 = Tx::new();
        let mut t2 = Tx::new();
        s.op(&mut t1, Caller::DOM0).write("/vif/1/k", b"a").unwrap();
        s.op(&mut t2, Caller::DOM0).write("/vif/2/k", b"b").unwrap();
        let c1 = s.commit(t1).unwrap();
        assert_eq!(c1, vec![Change::Modified("/vif/1/k".into())]);
        s.commit(t2).unwrap();
        assert_eq!(
            run(&mut s, Caller::DOM0, |o| o.read("/vif/2/k")).unwrap(),
            b"b"
        );
    }

    #[test]
    fn test_directory_conflicts_with_new_child() {
        let mut s = Store::new();
        run(&mut s, Caller::DOM0, |o| o.mkdir("/d")).unwrap();
        let mut t1 = Tx::new();
        assert!(s
            .op(&mut t1, Caller::DOM0)
            .directory("/d")
            .unwrap()
            .is_empty());
        s.op(&mut t1, Caller::DOM0).write("/other", b"").unwrap();
        run(&mut s, Caller::DOM0, |o| o.write("/d/new", b"")).unwrap();
        assert_eq!(s.commit(t1).unwrap_err(), XsErrno::Eagain);
    }

    #[test]
    fn test_rm_and_recreate_inside_transaction() {
        let mut s = Store::new();
        run(&mut s, Caller::DOM0, |o| o.write("/a/old", b"1")).unwrap();
        let mut t = Tx::new();
        s.op(&mut t, Caller::DOM0).rm("/a").unwrap();
        s.op(&mut t, Caller::DOM0).write("/a/new", b"2").unwrap();
        s.commit(t).unwrap();
        assert_eq!(
            run(&mut s, Caller::DOM0, |o| o.directory("/a")).unwrap(),
            vec!["new"]
        );
        assert!(!s.exists("/a/old"));
    }
}
