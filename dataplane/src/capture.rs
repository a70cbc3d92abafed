//! Packet capture through the dataplane (`vrctl capture`, as Tungsten Fabric's `vifdump`):
//! while a session is armed, the lcores copy the frames one interface receives and/or sends
//! into a bounded set of slots, and the control thread hands them to the client.
//!
//! Off, a capture costs the forwarding path one relaxed load per batch and per output pass.
//! On, a matching packet costs a copy of at most `snaplen` bytes into a slot taken from a
//! lock-free free list: no allocation, no lock, no system call (the time stamp is the vDSO's
//! clock). When the reader is slow the free list runs dry and the packet is counted as lost,
//! never queued without bound. Slots are allocated when a session starts and freed when it
//! stops, so an idle dataplane holds none.
//!
//! One session at a time: a second `vrctl capture` gets a clear `busy` error. The control
//! server stops a session when the connection that started it closes (a `vrctl` killed by
//! Ctrl-C leaves nothing armed).

use crossbeam_queue::ArrayQueue;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

/// Slots at most (the queues' capacity; pointers only until a session fills them).
pub const MAX_SLOTS: usize = 1024;
/// Memory a session's slots may take together.
pub const SLOT_BUDGET: usize = 16 << 20;
/// Default bytes kept of each frame: a jumbo frame whole.
pub const DEFAULT_SNAPLEN: u32 = 9216;
/// Largest `snaplen` (a GSO super-packet is cut there).
pub const MAX_SNAPLEN: u32 = 65535;
/// Fewest bytes kept: an Ethernet, IPv4 and UDP header with an MPLS label.
pub const MIN_SNAPLEN: u32 = 64;

/// Which way a frame goes through the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Received from the interface (what the VM or the fabric sent us).
    Rx,
    /// Sent to the interface.
    Tx,
    /// Both.
    #[default]
    Both,
}

impl Direction {
    fn bits(self) -> u32 {
        match self {
            Direction::Rx => RX,
            Direction::Tx => TX,
            Direction::Both => RX | TX,
        }
    }
}

const RX: u32 = 1;
const TX: u32 = 2;

/// One captured frame, as the control socket carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedPacket {
    /// Wall-clock time it passed, in nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Interface id.
    pub vif: u16,
    /// `Rx` or `Tx`.
    pub dir: Direction,
    /// The frame's length on the wire.
    pub orig_len: u32,
    /// Its first `snaplen` bytes.
    #[serde(with = "hex_bytes")]
    pub data: Vec<u8>,
}

/// Why a capture request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// Another session is armed.
    #[error("a capture of vif {vif} is already running (one at a time); stop it first")]
    Busy {
        /// The interface it captures.
        vif: u16,
    },
    /// The session ended (stopped, or its connection closed) or never existed.
    #[error("capture session {0} is not running")]
    NoSession(u64),
    /// `snaplen` out of range.
    #[error("snaplen {0} is outside {MIN_SNAPLEN}..={MAX_SNAPLEN}")]
    Snaplen(u32),
}

/// A slot: one frame's copy and where it was seen.
#[derive(Debug)]
struct Slot {
    session: u64,
    ts_ns: u64,
    vif: u16,
    tx: bool,
    orig_len: u32,
    len: u32,
    data: Box<[u8]>,
}

/// What the control side keeps about the armed session.
#[derive(Debug, Default)]
struct Control {
    /// The session armed now (0: none).
    session: u64,
    vif: u16,
    next: u64,
}

/// The capture state shared by the lcores (which offer frames) and the control thread (which
/// starts, reads and stops sessions).
#[derive(Debug)]
pub struct Capture {
    armed: AtomicBool,
    /// Armed session id; stamped on every slot so a slot an lcore filled for an earlier session
    /// is recognised and discarded.
    session: AtomicU64,
    vif: AtomicU32,
    dirs: AtomicU32,
    lost: AtomicU64,
    free: ArrayQueue<Box<Slot>>,
    full: ArrayQueue<Box<Slot>>,
    control: Mutex<Control>,
}

impl Default for Capture {
    fn default() -> Self {
        Self::new()
    }
}

impl Capture {
    /// No session; the queues hold no slots.
    pub fn new() -> Self {
        Self {
            armed: AtomicBool::new(false),
            session: AtomicU64::new(0),
            vif: AtomicU32::new(0),
            dirs: AtomicU32::new(0),
            lost: AtomicU64::new(0),
            free: ArrayQueue::new(MAX_SLOTS),
            full: ArrayQueue::new(MAX_SLOTS),
            control: Mutex::new(Control {
                next: 1,
                ..Control::default()
            }),
        }
    }

    /// Whether a session is armed: the one check the forwarding path makes per batch.
    #[inline]
    pub fn armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    /// Copies `frame` into a slot if the armed session captures `vif` in that direction; with
    /// no free slot the frame is counted as lost.
    #[inline]
    pub fn offer(&self, vif: u16, tx: bool, frame: &[u8]) {
        if self.vif.load(Ordering::Relaxed) != u32::from(vif)
            || self.dirs.load(Ordering::Relaxed) & if tx { TX } else { RX } == 0
        {
            return;
        }
        self.copy(vif, tx, frame);
    }

    #[inline(never)]
    fn copy(&self, vif: u16, tx: bool, frame: &[u8]) {
        let Some(mut slot) = self.free.pop() else {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let len = frame.len().min(slot.data.len());
        slot.data[..len].copy_from_slice(&frame[..len]);
        slot.len = len as u32;
        slot.orig_len = frame.len() as u32;
        slot.vif = vif;
        slot.tx = tx;
        slot.session = self.session.load(Ordering::Acquire);
        slot.ts_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // The full queue has room for every slot there is, so this cannot fail; if it ever
        // did, the slot is dropped (freed here) rather than kept.
        let _ = self.full.push(slot);
    }

    /// Arms a session capturing `vif` in `dir`, keeping `snaplen` bytes of each frame; returns
    /// its id and how many slots it has.
    pub fn start(
        &self,
        vif: u16,
        dir: Direction,
        snaplen: u32,
    ) -> Result<(u64, usize), CaptureError> {
        if !(MIN_SNAPLEN..=MAX_SNAPLEN).contains(&snaplen) {
            return Err(CaptureError::Snaplen(snaplen));
        }
        let mut c = self.control.lock().unwrap_or_else(|e| e.into_inner());
        if c.session != 0 {
            return Err(CaptureError::Busy { vif: c.vif });
        }
        // What an earlier session left (slots an lcore filled after it stopped) goes.
        while self.full.pop().is_some() {}
        while self.free.pop().is_some() {}
        let slots = (SLOT_BUDGET / snaplen as usize).clamp(1, MAX_SLOTS);
        for _ in 0..slots {
            let slot = Box::new(Slot {
                session: 0,
                ts_ns: 0,
                vif: 0,
                tx: false,
                orig_len: 0,
                len: 0,
                data: vec![0u8; snaplen as usize].into_boxed_slice(),
            });
            let _ = self.free.push(slot);
        }
        let session = c.next;
        c.next += 1;
        c.session = session;
        c.vif = vif;
        self.lost.store(0, Ordering::Relaxed);
        self.vif.store(u32::from(vif), Ordering::Relaxed);
        self.dirs.store(dir.bits(), Ordering::Relaxed);
        self.session.store(session, Ordering::Release);
        self.armed.store(true, Ordering::Release);
        log::info!(
            "capture session {session}: vif {vif} {dir:?}, snaplen {snaplen}, {slots} slots"
        );
        Ok((session, slots))
    }

    /// Up to `max` frames of `session` captured since the last read, oldest first, and how
    /// many were lost (no free slot) since the session started.
    pub fn read(
        &self,
        session: u64,
        max: usize,
    ) -> Result<(Vec<CapturedPacket>, u64), CaptureError> {
        let vif = {
            let c = self.control.lock().unwrap_or_else(|e| e.into_inner());
            if c.session != session || session == 0 {
                return Err(CaptureError::NoSession(session));
            }
            c.vif
        };
        let mut out = Vec::new();
        while out.len() < max {
            let Some(slot) = self.full.pop() else {
                break;
            };
            if slot.session == session && slot.vif == vif {
                out.push(CapturedPacket {
                    ts_ns: slot.ts_ns,
                    vif: slot.vif,
                    dir: if slot.tx {
                        Direction::Tx
                    } else {
                        Direction::Rx
                    },
                    orig_len: slot.orig_len,
                    data: slot.data[..slot.len as usize].to_vec(),
                });
            }
            let _ = self.free.push(slot);
        }
        Ok((out, self.lost.load(Ordering::Relaxed)))
    }

    /// Disarms `session` and frees its slots (those an lcore holds right now are dropped when
    /// the next session starts). Stopping a session that is not armed is a no-op.
    pub fn stop(&self, session: u64) -> bool {
        let mut c = self.control.lock().unwrap_or_else(|e| e.into_inner());
        if c.session != session || session == 0 {
            return false;
        }
        self.armed.store(false, Ordering::Release);
        self.dirs.store(0, Ordering::Relaxed);
        c.session = 0;
        while self.full.pop().is_some() {}
        while self.free.pop().is_some() {}
        log::info!(
            "capture session {session} stopped ({} frames lost)",
            self.lost.load(Ordering::Relaxed)
        );
        true
    }

    /// The armed session's id, if any.
    pub fn session(&self) -> Option<u64> {
        let c = self.control.lock().unwrap_or_else(|e| e.into_inner());
        (c.session != 0).then_some(c.session)
    }
}

/// Frame bytes as a hex string in JSON (half the size of a number array, and readable).
mod hex_bytes {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use std::fmt::Write;

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(b.len() * 2);
        for x in b {
            let _ = write!(out, "{x:02x}");
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <&str>::deserialize(d)?;
        if !s.len().is_multiple_of(2) {
            return Err(D::Error::custom("odd number of hex digits"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
                    .ok_or_else(|| D::Error::custom("not a hex digit"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_copied_while_disarmed_or_for_another_vif_or_direction() {
        let c = Capture::new();
        c.offer(3, false, &[1, 2, 3]);
        assert!(!c.armed());
        let (s, _) = c.start(3, Direction::Rx, 64).expect("start");
        assert!(c.armed());
        c.offer(4, false, &[9; 80]);
        c.offer(3, true, &[8; 80]);
        c.offer(3, false, &[7; 80]);
        let (pkts, lost) = c.read(s, 100).expect("read");
        assert_eq!(lost, 0);
        assert_eq!(pkts.len(), 1);
        let p = &pkts[0];
        assert_eq!((p.vif, p.dir, p.orig_len), (3, Direction::Rx, 80));
        assert_eq!(p.data, vec![7; 64], "cut at snaplen");
        assert!(p.ts_ns > 1_600_000_000_000_000_000);
    }

    #[test]
    fn a_slow_reader_loses_frames_and_they_are_counted() {
        let c = Capture::new();
        let (s, slots) = c.start(1, Direction::Both, MAX_SNAPLEN).expect("start");
        assert_eq!(slots, SLOT_BUDGET / MAX_SNAPLEN as usize);
        for i in 0..slots + 10 {
            c.offer(1, i % 2 == 0, &[i as u8; 100]);
        }
        let (pkts, lost) = c.read(s, usize::MAX).expect("read");
        assert_eq!((pkts.len(), lost), (slots, 10));
        assert_eq!(pkts[0].dir, Direction::Tx);
        assert_eq!(pkts[1].data, vec![1; 100]);
        // Read slots are free again.
        c.offer(1, false, &[5; 10]);
        assert_eq!(c.read(s, 10).expect("read").0.len(), 1);
    }

    #[test]
    fn one_session_at_a_time_and_a_stopped_one_is_gone() {
        let c = Capture::new();
        assert_eq!(
            c.start(1, Direction::Rx, 10),
            Err(CaptureError::Snaplen(10))
        );
        let (s, _) = c.start(1, Direction::Rx, 128).expect("start");
        assert_eq!(
            c.start(2, Direction::Rx, 128),
            Err(CaptureError::Busy { vif: 1 })
        );
        assert!(c.stop(s));
        assert!(!c.armed());
        assert_eq!(c.read(s, 1), Err(CaptureError::NoSession(s)));
        assert!(!c.stop(s));
        let (s2, _) = c.start(2, Direction::Tx, 128).expect("restart");
        assert_ne!(s, s2);
        assert_eq!(c.session(), Some(s2));
    }

    #[test]
    fn a_slot_filled_for_an_earlier_session_is_not_read_in_the_next() {
        let c = Capture::new();
        let (s1, _) = c.start(1, Direction::Rx, 64).expect("start");
        c.offer(1, false, &[1; 70]);
        // An lcore that had popped a slot before the stop pushes it afterwards.
        let straggler = c.full.pop().expect("filled");
        assert!(c.stop(s1));
        let (s2, _) = c.start(1, Direction::Rx, 64).expect("start");
        let _ = c.full.push(straggler);
        c.offer(1, false, &[2; 70]);
        let (pkts, _) = c.read(s2, 10).expect("read");
        assert_eq!(pkts.len(), 1);
        assert_eq!(pkts[0].data[0], 2);
    }

    #[test]
    fn frames_travel_as_hex_in_json() {
        let p = CapturedPacket {
            ts_ns: 1,
            vif: 0,
            dir: Direction::Rx,
            orig_len: 3,
            data: vec![0x00, 0xab, 0xff],
        };
        let j = serde_json::to_string(&p).expect("json");
        assert!(j.contains("\"data\":\"00abff\""), "{j}");
        assert_eq!(serde_json::from_str::<CapturedPacket>(&j).expect("back"), p);
        let bad = j.replace("00abff", "00abf");
        assert!(serde_json::from_str::<CapturedPacket>(&bad).is_err());
        let bad = j.replace("00abff", "00abzz");
        assert!(serde_json::from_str::<CapturedPacket>(&bad).is_err());
    }
}
