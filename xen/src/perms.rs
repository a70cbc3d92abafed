// SPDX-License-Identifier: Apache-2.0
//! Node permissions as xenstore spells them: a list of `<letter><domid>` entries, e.g. `r0`,
//! `b3`. The first entry names the node's **owner** and the access of every domain not listed
//! later; the owner itself always has full access. Letters: `n` none, `r` read, `w` write,
//! `b` both (docs/misc/xenstore.txt, "permissions").

use std::fmt;

/// One access level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `n`.
    None,
    /// `r`.
    Read,
    /// `w`.
    Write,
    /// `b`.
    Both,
}

impl Access {
    /// Whether this level allows reading.
    pub fn can_read(self) -> bool {
        matches!(self, Access::Read | Access::Both)
    }

    /// Whether this level allows writing.
    pub fn can_write(self) -> bool {
        matches!(self, Access::Write | Access::Both)
    }

    fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }
}

/// One `<letter><domid>` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermEntry {
    /// The domain this entry is about.
    pub domid: u32,
    /// Its access.
    pub access: Access,
}

impl PermEntry {
    /// Parses `r0`, `b12`, ...
    pub fn parse(s: &str) -> Option<PermEntry> {
        let mut chars = s.chars();
        let access = match chars.next()? {
            'n' => Access::None,
            'r' => Access::Read,
            'w' => Access::Write,
            'b' => Access::Both,
            _ => return None,
        };
        let rest = chars.as_str();
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(PermEntry {
            domid: rest.parse().ok()?,
            access,
        })
    }
}

impl fmt::Display for PermEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.access.letter(), self.domid)
    }
}

/// A node's permission list (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Perms {
    entries: Vec<PermEntry>,
}

impl Perms {
    /// Owned by `owner`, everyone else gets `others`.
    pub fn new(owner: u32, others: Access) -> Perms {
        Perms {
            entries: vec![PermEntry {
                domid: owner,
                access: others,
            }],
        }
    }

    /// From a list of entries; `None` if empty.
    pub fn from_entries(entries: Vec<PermEntry>) -> Option<Perms> {
        if entries.is_empty() {
            None
        } else {
            Some(Perms { entries })
        }
    }

    /// Parses the strings of a `SET_PERMS` request or a `GET_PERMS` reply.
    pub fn parse<'a>(parts: impl IntoIterator<Item = &'a str>) -> Option<Perms> {
        let entries: Option<Vec<PermEntry>> = parts.into_iter().map(PermEntry::parse).collect();
        Perms::from_entries(entries?)
    }

    /// The owning domain.
    pub fn owner(&self) -> u32 {
        self.entries[0].domid
    }

    /// The entries, owner first.
    pub fn entries(&self) -> &[PermEntry] {
        &self.entries
    }

    /// What `domid` may do with the node.
    pub fn access_for(&self, domid: u32) -> Access {
        if domid == self.owner() {
            return Access::Both;
        }
        self.entries[1..]
            .iter()
            .find(|e| e.domid == domid)
            .map_or(self.entries[0].access, |e| e.access)
    }

    /// The same permissions with a different owner (what a new node created by an unprivileged
    /// domain inherits from its parent).
    pub fn with_owner(&self, owner: u32) -> Perms {
        let mut p = self.clone();
        p.entries[0].domid = owner;
        p
    }

    /// The `GET_PERMS` reply payload: each entry NUL-terminated.
    pub fn to_payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in &self.entries {
            out.extend_from_slice(e.to_string().as_bytes());
            out.push(0);
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_and_access() {
        let p = Perms::parse(["n0", "r5", "b7"]).unwrap();
        assert_eq!(p.owner(), 0);
        assert_eq!(p.access_for(0), Access::Both);
        assert_eq!(p.access_for(5), Access::Read);
        assert_eq!(p.access_for(7), Access::Both);
        assert_eq!(p.access_for(9), Access::None);
        assert_eq!(p.to_payload(), b"n0\0r5\0b7\0");
        assert_eq!(p.with_owner(9).access_for(9), Access::Both);
    }

    #[test]
    fn test_rejects_malformed() {
        for bad in ["", "x0", "r", "r-1", "r1a", "rr1", "r99999999999"] {
            assert_eq!(PermEntry::parse(bad), None, "{bad}");
        }
        assert_eq!(Perms::parse([]), None);
    }
}
