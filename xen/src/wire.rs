// SPDX-License-Identifier: Apache-2.0
//! The xenstore wire format, with no I/O (after ocaml-xenstore's `xs_protocol`).
//!
//! Every message is a 16-byte header of four little-endian (host order on x86) `u32`s,
//! `type, req_id, tx_id, len`, followed by `len` bytes of payload
//! (`xen/include/public/io/xs_wire.h`, `struct xsd_sockmsg`). The payload is at most
//! [`PAYLOAD_MAX`] bytes; a header that announces more is a protocol violation after which the
//! stream cannot be resynchronised, so [`Parser`] fails and the connection must be dropped
//! (C xenstored does the same).
//!
//! Payload conventions, per operation (docs/misc/xenstore.txt):
//! * requests carry NUL-terminated strings (`path\0`, `path\0token\0`), except `WRITE`, whose value
//!   follows the path's NUL and is *not* terminated;
//! * replies to `READ` are the raw value, replies to `DIRECTORY` / `GET_PERMS` are NUL-terminated
//!   strings, acks are `OK\0`, errors are `XS_ERROR` with the errno name (`ENOENT\0`);
//! * watch events (`XS_WATCH_EVENT`, `req_id` 0) carry `path\0token\0`.
//!
//! [`Parser`] is incremental: feed it whatever the transport returned (a partial header, three
//! messages and a half, ...) and pull complete messages out.

use std::fmt;

/// Largest payload a message may carry (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 16;
/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = 3072;
/// Longest relative path (`XENSTORE_REL_PATH_MAX`).
pub const REL_PATH_MAX: usize = 2048;

macro_rules! ops {
    ($($(#[$m:meta])* $name:ident = $val:expr,)*) => {
        /// Message type (`enum xsd_sockmsg_type`). Unknown values are data, never a panic.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Op {
            $($(#[$m])* $name,)*
            /// Any other value (including the removed `XS_RESTRICT` = 20).
            Unknown(u32),
        }
        impl From<u32> for Op {
            fn from(v: u32) -> Op {
                match v { $($val => Op::$name,)* other => Op::Unknown(other) }
            }
        }
        impl From<Op> for u32 {
            fn from(op: Op) -> u32 {
                match op { $(Op::$name => $val,)* Op::Unknown(v) => v }
            }
        }
    };
}

ops! {
    /// `XS_CONTROL` (formerly `XS_DEBUG`).
    Control = 0,
    /// `XS_DIRECTORY`: list the children of a node.
    Directory = 1,
    /// `XS_READ`: read a node's value.
    Read = 2,
    /// `XS_GET_PERMS`.
    GetPerms = 3,
    /// `XS_WATCH`: `path\0token\0`.
    Watch = 4,
    /// `XS_UNWATCH`: `path\0token\0`.
    Unwatch = 5,
    /// `XS_TRANSACTION_START`: reply is the transaction id as a decimal string.
    TransactionStart = 6,
    /// `XS_TRANSACTION_END`: `T\0` commits, `F\0` aborts.
    TransactionEnd = 7,
    /// `XS_INTRODUCE` (toolstack only).
    Introduce = 8,
    /// `XS_RELEASE` (toolstack only).
    Release = 9,
    /// `XS_GET_DOMAIN_PATH`.
    GetDomainPath = 10,
    /// `XS_WRITE`: `path\0value`.
    Write = 11,
    /// `XS_MKDIR`.
    Mkdir = 12,
    /// `XS_RM`: removes a node and all its children.
    Rm = 13,
    /// `XS_SET_PERMS`: `path\0perm\0perm\0...`.
    SetPerms = 14,
    /// `XS_WATCH_EVENT`: asynchronous, daemon to client only.
    WatchEvent = 15,
    /// `XS_ERROR`: reply carrying an errno name.
    Error = 16,
    /// `XS_IS_DOMAIN_INTRODUCED`.
    IsDomainIntroduced = 17,
    /// `XS_RESUME`.
    Resume = 18,
    /// `XS_SET_TARGET`.
    SetTarget = 19,
    /// `XS_RESET_WATCHES`.
    ResetWatches = 21,
    /// `XS_DIRECTORY_PART`: `path\0offset\0`, for directories whose listing exceeds a payload.
    DirectoryPart = 22,
}

/// The fixed 16-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type.
    pub op: Op,
    /// Request id, echoed in the reply; 0 in watch events.
    pub req_id: u32,
    /// Transaction id, 0 outside a transaction.
    pub tx_id: u32,
    /// Payload length.
    pub len: u32,
}

impl Header {
    /// Decodes a header from exactly [`HEADER_LEN`] bytes.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Header {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            op: Op::from(word(0)),
            req_id: word(4),
            tx_id: word(8),
            len: word(12),
        }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&u32::from(self.op).to_le_bytes());
        b[4..8].copy_from_slice(&self.req_id.to_le_bytes());
        b[8..12].copy_from_slice(&self.tx_id.to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b
    }
}

/// One complete message.
#[derive(Clone, PartialEq, Eq)]
pub struct Msg {
    /// Message type.
    pub op: Op,
    /// Request id.
    pub req_id: u32,
    /// Transaction id.
    pub tx_id: u32,
    /// Payload (at most [`PAYLOAD_MAX`] bytes).
    pub payload: Vec<u8>,
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Msg {{ op: {:?}, req_id: {}, tx_id: {}, payload: {:?} }}",
            self.op,
            self.req_id,
            self.tx_id,
            String::from_utf8_lossy(&self.payload)
        )
    }
}

impl Msg {
    /// Builds a message; fails if the payload is too long to be sent.
    pub fn new(op: Op, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Result<Msg, WireError> {
        if payload.len() > PAYLOAD_MAX {
            return Err(WireError::PayloadTooLong(payload.len()));
        }
        Ok(Msg {
            op,
            req_id,
            tx_id,
            payload,
        })
    }

    /// A request whose payload is a list of NUL-terminated strings.
    pub fn with_strings(
        op: Op,
        req_id: u32,
        tx_id: u32,
        parts: &[&[u8]],
    ) -> Result<Msg, WireError> {
        let mut payload = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
        for p in parts {
            payload.extend_from_slice(p);
            payload.push(0);
        }
        Msg::new(op, req_id, tx_id, payload)
    }

    /// A `WRITE` request: `path\0value` (the value is not NUL-terminated).
    pub fn write(req_id: u32, tx_id: u32, path: &str, value: &[u8]) -> Result<Msg, WireError> {
        let mut payload = Vec::with_capacity(path.len() + 1 + value.len());
        payload.extend_from_slice(path.as_bytes());
        payload.push(0);
        payload.extend_from_slice(value);
        Msg::new(Op::Write, req_id, tx_id, payload)
    }

    /// A watch event: `path\0token\0`.
    pub fn watch_event(path: &str, token: &[u8]) -> Result<Msg, WireError> {
        Msg::with_strings(Op::WatchEvent, 0, 0, &[path.as_bytes(), token])
    }

    /// An error reply to `req`, carrying `err`'s name.
    pub fn error_reply(req: &Msg, err: XsErrno) -> Msg {
        let mut payload = err.name().as_bytes().to_vec();
        payload.push(0);
        Msg {
            op: Op::Error,
            req_id: req.req_id,
            tx_id: req.tx_id,
            payload,
        }
    }

    /// A successful reply to `req` with `payload`.
    pub fn reply(req: &Msg, payload: Vec<u8>) -> Result<Msg, WireError> {
        Msg::new(req.op, req.req_id, req.tx_id, payload)
    }

    /// The `OK\0` acknowledgement.
    pub fn ack(req: &Msg) -> Msg {
        Msg {
            op: req.op,
            req_id: req.req_id,
            tx_id: req.tx_id,
            payload: b"OK\0".to_vec(),
        }
    }

    /// Header plus payload, ready for the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoded message to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        // The constructors bound the payload to PAYLOAD_MAX, so this cannot truncate; a Msg built
        // by hand with a larger payload is a caller bug that the peer will reject anyway.
        let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        let h = Header {
            op: self.op,
            req_id: self.req_id,
            tx_id: self.tx_id,
            len,
        };
        out.extend_from_slice(&h.encode());
        out.extend_from_slice(&self.payload);
    }

    /// If this is an `XS_ERROR` reply, the error it carries.
    pub fn as_error(&self) -> Option<XsErrno> {
        if self.op != Op::Error {
            return None;
        }
        let name = self.payload.strip_suffix(b"\0").unwrap_or(&self.payload);
        Some(XsErrno::from_name(&String::from_utf8_lossy(name)))
    }
}

/// Why the byte stream cannot be decoded (the connection must be closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A header announced a payload longer than `XENSTORE_PAYLOAD_MAX`.
    #[error("payload of {0} bytes exceeds the xenstore maximum of 4096")]
    PayloadTooLong(usize),
}

/// Errors the daemon reports by name in `XS_ERROR` replies (`struct xsd_errors`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum XsErrno {
    /// Invalid argument (malformed path, bad payload).
    Einval,
    /// Permission denied.
    Eacces,
    /// Already exists (e.g. a duplicate watch).
    Eexist,
    /// Is a directory.
    Eisdir,
    /// No such node, watch or transaction.
    Enoent,
    /// Out of memory.
    Enomem,
    /// Quota exceeded.
    Enospc,
    /// I/O error.
    Eio,
    /// Directory not empty.
    Enotempty,
    /// Operation not supported.
    Enosys,
    /// Read-only.
    Erofs,
    /// Busy (e.g. nested transaction).
    Ebusy,
    /// Transaction conflict: retry the whole transaction.
    Eagain,
    /// Already connected.
    Eisconn,
    /// Reply would not fit in one payload.
    E2big,
    /// Operation not permitted.
    Eperm,
    /// A name this crate does not know; kept verbatim.
    Other(String),
}

impl XsErrno {
    /// The name sent on the wire.
    pub fn name(&self) -> &str {
        match self {
            XsErrno::Einval => "EINVAL",
            XsErrno::Eacces => "EACCES",
            XsErrno::Eexist => "EEXIST",
            XsErrno::Eisdir => "EISDIR",
            XsErrno::Enoent => "ENOENT",
            XsErrno::Enomem => "ENOMEM",
            XsErrno::Enospc => "ENOSPC",
            XsErrno::Eio => "EIO",
            XsErrno::Enotempty => "ENOTEMPTY",
            XsErrno::Enosys => "ENOSYS",
            XsErrno::Erofs => "EROFS",
            XsErrno::Ebusy => "EBUSY",
            XsErrno::Eagain => "EAGAIN",
            XsErrno::Eisconn => "EISCONN",
            XsErrno::E2big => "E2BIG",
            XsErrno::Eperm => "EPERM",
            XsErrno::Other(s) => s,
        }
    }

    /// Parses a name received on the wire.
    pub fn from_name(name: &str) -> XsErrno {
        match name {
            "EINVAL" => XsErrno::Einval,
            "EACCES" => XsErrno::Eacces,
            "EEXIST" => XsErrno::Eexist,
            "EISDIR" => XsErrno::Eisdir,
            "ENOENT" => XsErrno::Enoent,
            "ENOMEM" => XsErrno::Enomem,
            "ENOSPC" => XsErrno::Enospc,
            "EIO" => XsErrno::Eio,
            "ENOTEMPTY" => XsErrno::Enotempty,
            "ENOSYS" => XsErrno::Enosys,
            "EROFS" => XsErrno::Erofs,
            "EBUSY" => XsErrno::Ebusy,
            "EAGAIN" => XsErrno::Eagain,
            "EISCONN" => XsErrno::Eisconn,
            "E2BIG" => XsErrno::E2big,
            "EPERM" => XsErrno::Eperm,
            other => XsErrno::Other(other.to_string()),
        }
    }
}

impl fmt::Display for XsErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Incremental decoder: [`Parser::feed`] bytes as they arrive, then call [`Parser::next`] until it
/// returns `Ok(None)`.
///
/// After an error the parser stays failed: the stream has lost framing and the only safe thing is
/// to close it.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    /// Start of the undecoded bytes in `buf` (compacted lazily, so feeding is amortised O(n)).
    start: usize,
    failed: Option<WireError>,
}

impl Parser {
    /// An empty parser.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes still needed before the next message is complete (0 when one is ready).
    pub fn need(&self) -> usize {
        let avail = self.buf.len() - self.start;
        if avail < HEADER_LEN {
            return HEADER_LEN - avail;
        }
        let len = self.peek_len();
        (HEADER_LEN + len).saturating_sub(avail)
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn peek_len(&self) -> usize {
        let s = self.start;
        let b = &self.buf[s + 12..s + 16];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    /// [`WireError::PayloadTooLong`] when a header announces an oversized payload.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Msg>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let avail = self.buf.len() - self.start;
        if avail < HEADER_LEN {
            return Ok(None);
        }
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
        let h = Header::decode(&hb);
        let len = h.len as usize;
        if len > PAYLOAD_MAX {
            let e = WireError::PayloadTooLong(len);
            self.failed = Some(e.clone());
            return Err(e);
        }
        if avail < HEADER_LEN + len {
            return Ok(None);
        }
        let body = self.start + HEADER_LEN;
        let payload = self.buf[body..body + len].to_vec();
        self.start = body + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(Msg {
            op: h.op,
            req_id: h.req_id,
            tx_id: h.tx_id,
            payload,
        }))
    }
}

/// Splits a payload of NUL-terminated strings. A missing final NUL is tolerated (the last string
/// then runs to the end); an empty payload is an empty list.
pub fn split_strings(payload: &[u8]) -> Vec<&[u8]> {
    if payload.is_empty() {
        return Vec::new();
    }
    let body = payload.strip_suffix(b"\0").unwrap_or(payload);
    body.split(|&b| b == 0).collect()
}

/// The payload as exactly one NUL-terminated UTF-8 string (the form of `READ`, `DIRECTORY`, `RM`,
/// ... requests). `None` if it is not.
pub fn single_string(payload: &[u8]) -> Option<&str> {
    let body = payload.strip_suffix(b"\0")?;
    if body.contains(&0) {
        return None;
    }
    std::str::from_utf8(body).ok()
}

/// Parses a watch event payload `path\0token\0` into (path, token).
pub fn parse_watch_event(payload: &[u8]) -> Option<(String, Vec<u8>)> {
    let parts = split_strings(payload);
    if parts.len() < 2 {
        return None;
    }
    let path = std::str::from_utf8(parts[0]).ok()?.to_string();
    Some((path, parts[1].to_vec()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A `READ /local/domain/0/name` request as libxenstore sends it (req_id 7, no transaction).
    const READ_REQ: [u8; 37] = [
        2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 21, 0, 0, 0, b'/', b'l', b'o', b'c', b'a', b'l', b'/',
        b'd', b'o', b'm', b'a', b'i', b'n', b'/', b'0', b'/', b'n', b'a', b'm', b'e', 0,
    ];

    fn fixture(op: u32, req: u32, tx: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&op.to_le_bytes());
        v.extend_from_slice(&req.to_le_bytes());
        v.extend_from_slice(&tx.to_le_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn test_op_numbers_match_xs_wire_h() {
        let table: &[(Op, u32)] = &[
            (Op::Control, 0),
            (Op::Directory, 1),
            (Op::Read, 2),
            (Op::GetPerms, 3),
            (Op::Watch, 4),
            (Op::Unwatch, 5),
            (Op::TransactionStart, 6),
            (Op::TransactionEnd, 7),
            (Op::Introduce, 8),
            (Op::Release, 9),
            (Op::GetDomainPath, 10),
            (Op::Write, 11),
            (Op::Mkdir, 12),
            (Op::Rm, 13),
            (Op::SetPerms, 14),
            (Op::WatchEvent, 15),
            (Op::Error, 16),
            (Op::IsDomainIntroduced, 17),
            (Op::Resume, 18),
            (Op::SetTarget, 19),
            (Op::Unknown(20), 20),
            (Op::ResetWatches, 21),
            (Op::DirectoryPart, 22),
            (Op::Unknown(0xffff), 0xffff),
        ];
        for &(op, n) in table {
            assert_eq!(Op::from(n), op);
            assert_eq!(u32::from(op), n);
        }
    }

    #[test]
    fn test_parse_read_request_fixture() {
        let mut p = Parser::new();
        p.feed(&READ_REQ);
        let m = p.next().unwrap().unwrap();
        assert_eq!(m.op, Op::Read);
        assert_eq!(m.req_id, 7);
        assert_eq!(m.tx_id, 0);
        assert_eq!(m.payload, b"/local/domain/0/name\0".to_vec());
        assert_eq!(single_string(&m.payload), Some("/local/domain/0/name"));
        assert_eq!(p.next().unwrap(), None);
    }

    #[test]
    fn test_emit_read_request_fixture() {
        let m = Msg::with_strings(Op::Read, 7, 0, &[b"/local/domain/0/name"]).unwrap();
        assert_eq!(m.encode(), READ_REQ.to_vec());
    }

    /// One fixture per message type: emit, compare with the hand-written bytes, parse back.
    #[test]
    fn test_fixtures_every_message_type() {
        let cases: Vec<(Msg, Vec<u8>)> = vec![
            (
                Msg::with_strings(Op::Directory, 1, 0, &[b"/a"]).unwrap(),
                fixture(1, 1, 0, b"/a\0"),
            ),
            (
                Msg::with_strings(Op::Read, 2, 5, &[b"/a/b"]).unwrap(),
                fixture(2, 2, 5, b"/a/b\0"),
            ),
            (
                Msg::with_strings(Op::GetPerms, 3, 0, &[b"/a"]).unwrap(),
                fixture(3, 3, 0, b"/a\0"),
            ),
            (
                Msg::with_strings(Op::Watch, 4, 0, &[b"/a", b"tok"]).unwrap(),
                fixture(4, 4, 0, b"/a\0tok\0"),
            ),
            (
                Msg::with_strings(Op::Unwatch, 5, 0, &[b"/a", b"tok"]).unwrap(),
                fixture(5, 5, 0, b"/a\0tok\0"),
            ),
            (
                Msg::with_strings(Op::TransactionStart, 6, 0, &[b""]).unwrap(),
                fixture(6, 6, 0, b"\0"),
            ),
            (
                Msg::with_strings(Op::TransactionEnd, 7, 9, &[b"T"]).unwrap(),
                fixture(7, 7, 9, b"T\0"),
            ),
            (
                Msg::with_strings(Op::GetDomainPath, 10, 0, &[b"3"]).unwrap(),
                fixture(10, 10, 0, b"3\0"),
            ),
            (
                Msg::write(11, 0, "/a", b"v\x00x").unwrap(),
                fixture(11, 11, 0, b"/a\0v\0x"),
            ),
            (
                Msg::with_strings(Op::Mkdir, 12, 0, &[b"/a"]).unwrap(),
                fixture(12, 12, 0, b"/a\0"),
            ),
            (
                Msg::with_strings(Op::Rm, 13, 0, &[b"/a"]).unwrap(),
                fixture(13, 13, 0, b"/a\0"),
            ),
            (
                Msg::with_strings(Op::SetPerms, 14, 0, &[b"/a", b"n0", b"r5"]).unwrap(),
                fixture(14, 14, 0, b"/a\0n0\0r5\0"),
            ),
            (
                Msg::watch_event("/a/b", b"tok").unwrap(),
                fixture(15, 0, 0, b"/a/b\0tok\0"),
            ),
            (
                Msg::error_reply(
                    &Msg::with_strings(Op::Read, 16, 0, &[b"/x"]).unwrap(),
                    XsErrno::Enoent,
                ),
                fixture(16, 16, 0, b"ENOENT\0"),
            ),
            (
                Msg::with_strings(Op::IsDomainIntroduced, 17, 0, &[b"0"]).unwrap(),
                fixture(17, 17, 0, b"0\0"),
            ),
            (
                Msg::with_strings(Op::ResetWatches, 21, 0, &[b""]).unwrap(),
                fixture(21, 21, 0, b"\0"),
            ),
            (
                Msg::with_strings(Op::DirectoryPart, 22, 0, &[b"/a", b"0"]).unwrap(),
                fixture(22, 22, 0, b"/a\x000\0"),
            ),
            (
                Msg::ack(&Msg::with_strings(Op::Write, 11, 0, &[b"/a"]).unwrap()),
                fixture(11, 11, 0, b"OK\0"),
            ),
        ];
        for (msg, bytes) in cases {
            assert_eq!(msg.encode(), bytes, "emit {msg:?}");
            let mut p = Parser::new();
            p.feed(&bytes);
            assert_eq!(p.next().unwrap().as_ref(), Some(&msg), "parse {msg:?}");
            assert_eq!(p.next().unwrap(), None);
        }
    }

    #[test]
    fn test_partial_reads_byte_by_byte() {
        let a = Msg::with_strings(Op::Read, 1, 0, &[b"/a"]).unwrap();
        let b = Msg::watch_event("/x", b"t").unwrap();
        let c = Msg::new(Op::Read, 2, 0, vec![]).unwrap();
        let mut stream = a.encode();
        stream.extend(b.encode());
        stream.extend(c.encode());
        let mut p = Parser::new();
        let mut got = Vec::new();
        for (i, byte) in stream.iter().enumerate() {
            p.feed(std::slice::from_ref(byte));
            while let Some(m) = p.next().unwrap() {
                got.push((i, m));
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].1, a);
        assert_eq!(got[1].1, b);
        assert_eq!(got[2].1, c);
        // Each message completes exactly at its last byte.
        assert_eq!(got[0].0, a.encode().len() - 1);
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn test_need_counts_missing_bytes() {
        let m = Msg::with_strings(Op::Read, 1, 0, &[b"/abc"])
            .unwrap()
            .encode();
        let mut p = Parser::new();
        assert_eq!(p.need(), HEADER_LEN);
        p.feed(&m[..10]);
        assert_eq!(p.need(), 6);
        p.feed(&m[10..18]);
        assert_eq!(p.need(), m.len() - 18);
    }

    #[test]
    fn test_oversized_payload_fails_and_stays_failed() {
        let mut bytes = fixture(2, 1, 0, b"");
        bytes[12..16].copy_from_slice(&4097u32.to_le_bytes());
        let mut p = Parser::new();
        p.feed(&bytes);
        assert_eq!(p.next(), Err(WireError::PayloadTooLong(4097)));
        p.feed(&fixture(2, 1, 0, b"/a\0"));
        assert!(p.next().is_err());
    }

    #[test]
    fn test_max_payload_accepted() {
        let m = Msg::new(Op::Write, 1, 0, vec![b'x'; PAYLOAD_MAX]).unwrap();
        let mut p = Parser::new();
        p.feed(&m.encode());
        assert_eq!(p.next().unwrap(), Some(m));
        assert!(Msg::new(Op::Write, 1, 0, vec![0; PAYLOAD_MAX + 1]).is_err());
    }

    #[test]
    fn test_unknown_op_round_trips() {
        let bytes = fixture(20, 3, 0, b"x");
        let mut p = Parser::new();
        p.feed(&bytes);
        let m = p.next().unwrap().unwrap();
        assert_eq!(m.op, Op::Unknown(20));
        assert_eq!(m.encode(), bytes);
    }

    #[test]
    fn test_error_names() {
        for e in [
            XsErrno::Einval,
            XsErrno::Eacces,
            XsErrno::Eexist,
            XsErrno::Eisdir,
            XsErrno::Enoent,
            XsErrno::Enomem,
            XsErrno::Enospc,
            XsErrno::Eio,
            XsErrno::Enotempty,
            XsErrno::Enosys,
            XsErrno::Erofs,
            XsErrno::Ebusy,
            XsErrno::Eagain,
            XsErrno::Eisconn,
            XsErrno::E2big,
            XsErrno::Eperm,
        ] {
            assert_eq!(XsErrno::from_name(e.name()), e);
        }
        assert_eq!(XsErrno::from_name("EWHAT"), XsErrno::Other("EWHAT".into()));
        let m = Msg {
            op: Op::Error,
            req_id: 1,
            tx_id: 0,
            payload: b"EACCES\0".to_vec(),
        };
        assert_eq!(m.as_error(), Some(XsErrno::Eacces));
    }

    #[test]
    fn test_split_strings() {
        assert_eq!(split_strings(b""), Vec::<&[u8]>::new());
        assert_eq!(split_strings(b"a\0b\0"), vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(split_strings(b"a\0b"), vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(split_strings(b"\0"), vec![&b""[..]]);
        assert_eq!(single_string(b"/a\0"), Some("/a"));
        assert_eq!(single_string(b"/a"), None);
        assert_eq!(single_string(b"/a\0b\0"), None);
        assert_eq!(
            parse_watch_event(b"/p\0tok\0"),
            Some(("/p".to_string(), b"tok".to_vec()))
        );
        assert_eq!(parse_watch_event(b"/p\0"), None);
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

            /// Garbage never panics the decoder, whatever the chunking.
            #[test]
            fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..9000),
                                    chunk in 1usize..64) {
                let mut p = Parser::new();
                for c in data.chunks(chunk) {
                    p.feed(c);
                    while let Ok(Some(m)) = p.next() {
                        prop_assert!(m.payload.len() <= PAYLOAD_MAX);
                        let _ = m.as_error();
                        let _ = split_strings(&m.payload);
                        let _ = parse_watch_event(&m.payload);
                    }
                }
            }

            /// emit → parse is the identity, even when fed in arbitrary pieces.
            #[test]
            fn round_trip(op in any::<u32>(), req in any::<u32>(), tx in any::<u32>(),
                          payload in proptest::collection::vec(any::<u8>(), 0..PAYLOAD_MAX),
                          chunk in 1usize..5000) {
                let m = Msg::new(Op::from(op), req, tx, payload).unwrap();
                let bytes = m.encode();
                let mut p = Parser::new();
                let mut out = Vec::new();
                for c in bytes.chunks(chunk) {
                    p.feed(c);
                    while let Some(x) = p.next().unwrap() { out.push(x); }
                }
                prop_assert_eq!(out, vec![m]);
            }
        }
    }
}
