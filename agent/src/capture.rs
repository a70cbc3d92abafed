//! `vrctl capture`: arms a capture on one interface in the dataplane, reads what its lcores
//! copied until a count, a time limit or a signal, and hands each frame to a sink (a pcap
//! stream tshark reads, or one described line per frame). The protocol side is the control
//! socket's `CaptureStart`/`CaptureRead`/`CaptureStop`; the dataplane stops the capture by
//! itself if this process dies.

use crate::trace::describe;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vrouter_dataplane::capture::{CapturedPacket, Direction};
use vrouter_dataplane::ctl::{CtlClient, CtlError, Request, Response};
use vrouter_dataplane::port::pcap::PcapWriter;

/// How long to wait before reading again when the last read came back empty.
const IDLE_READ: Duration = Duration::from_millis(10);

/// What to capture and when to stop.
#[derive(Debug, Clone)]
pub struct CaptureOpts {
    /// Interface id.
    pub vif: u16,
    /// Received, sent or both.
    pub dir: Direction,
    /// Bytes kept of each frame.
    pub snaplen: u32,
    /// Stop after this many frames.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// How a capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Frames handed to the sink.
    pub captured: u64,
    /// Frames the dataplane could not keep (the reader was too slow).
    pub lost: u64,
}

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The control socket failed.
    #[error(transparent)]
    Ctl(#[from] CtlError),
    /// The dataplane refused (unknown vif, another capture running, bad snaplen).
    #[error("{0}")]
    Refused(String),
    /// The dataplane answered something else.
    #[error("unexpected answer from the dataplane to {0}")]
    Unexpected(&'static str),
}

/// Where captured frames go.
pub trait Sink {
    /// Takes one frame; an error ends the capture (a closed pipe ends it quietly).
    fn frame(&mut self, p: &CapturedPacket) -> io::Result<()>;
    /// Called once at the end.
    fn finish(&mut self) -> io::Result<()>;
}

/// A classic pcap stream (tcpdump's and tshark's format).
#[derive(Debug)]
pub struct PcapSink<W: Write>(PcapWriter<W>);

impl<W: Write> PcapSink<W> {
    /// Writes the file header to `out`.
    pub fn new(out: W) -> io::Result<Self> {
        Ok(Self(PcapWriter::new(out)?))
    }
}

impl<W: Write> Sink for PcapSink<W> {
    fn frame(&mut self, p: &CapturedPacket) -> io::Result<()> {
        self.0.write_packet(p.ts_ns, p.orig_len, &p.data)?;
        // `-w -` piped into tshark: each frame as it comes.
        self.0.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// One line per frame (time, direction, length), then its headers decoded as `vrctl trace`
/// shows them; `--json`: one JSON object per line.
#[derive(Debug)]
pub struct TextSink<W: Write> {
    out: W,
    json: bool,
}

impl<W: Write> TextSink<W> {
    /// Text, or JSON lines if `json`.
    pub fn new(out: W, json: bool) -> Self {
        Self { out, json }
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn frame(&mut self, p: &CapturedPacket) -> io::Result<()> {
        if self.json {
            let line = serde_json::to_string(p).map_err(io::Error::other)?;
            return writeln!(self.out, "{line}");
        }
        writeln!(self.out, "{}", header_line(p))?;
        for l in describe(&p.data).lines() {
            writeln!(self.out, "  {l}")?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// `HH:MM:SS.uuuuuu vif N rx|tx LEN bytes` (UTC, like the dataplane's log).
pub fn header_line(p: &CapturedPacket) -> String {
    let secs = p.ts_ns / 1_000_000_000;
    let micros = p.ts_ns % 1_000_000_000 / 1000;
    let dir = match p.dir {
        Direction::Rx => "rx",
        Direction::Tx => "tx",
        Direction::Both => "rx/tx",
    };
    let cut = if p.data.len() < p.orig_len as usize {
        format!(" (first {})", p.data.len())
    } else {
        String::new()
    };
    format!(
        "{:02}:{:02}:{:02}.{micros:06} vif {} {dir} {} bytes{cut}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        p.vif,
        p.orig_len
    )
}

/// Runs one capture to its end: `count` frames, `duration`, or `stop` set (by a signal
/// handler); the session is stopped before returning, whatever ended it.
pub fn capture(
    client: &mut CtlClient,
    o: &CaptureOpts,
    sink: &mut dyn Sink,
    stop: &AtomicBool,
) -> Result<Summary, CaptureError> {
    let session = match client.request(&Request::CaptureStart {
        vif: o.vif,
        dir: o.dir,
        snaplen: Some(o.snaplen),
    })? {
        Response::CaptureStarted { session, .. } => session,
        Response::Error { message, .. } => return Err(CaptureError::Refused(message)),
        _ => return Err(CaptureError::Unexpected("CaptureStart")),
    };
    let result = read_until_done(client, session, o, sink, stop);
    let _ = client.request(&Request::CaptureStop { session });
    let summary = result?;
    // A reader gone (closed pipe) is a normal end, as for tcpdump piped into head.
    match sink.finish() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(CaptureError::Refused(format!(
            "cannot write the capture: {e}"
        ))),
        _ => Ok(summary),
    }
}

fn read_until_done(
    client: &mut CtlClient,
    session: u64,
    o: &CaptureOpts,
    sink: &mut dyn Sink,
    stop: &AtomicBool,
) -> Result<Summary, CaptureError> {
    let start = Instant::now();
    let mut s = Summary::default();
    loop {
        if stop.load(Ordering::Relaxed) || o.duration.is_some_and(|d| start.elapsed() >= d) {
            return Ok(s);
        }
        let (packets, lost) = match client.request(&Request::CaptureRead { session, max: None })? {
            Response::Captured { packets, lost } => (packets, lost),
            Response::Error { message, .. } => return Err(CaptureError::Refused(message)),
            _ => return Err(CaptureError::Unexpected("CaptureRead")),
        };
        s.lost = lost;
        if packets.is_empty() {
            std::thread::sleep(IDLE_READ);
            continue;
        }
        for p in &packets {
            match sink.frame(p) {
                Ok(()) => s.captured += 1,
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(s),
                Err(e) => {
                    return Err(CaptureError::Refused(format!(
                        "cannot write the capture: {e}"
                    )))
                }
            }
            if o.count.is_some_and(|c| s.captured >= c) {
                return Ok(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_one_header_line_then_its_decoded_headers() {
        let p = CapturedPacket {
            ts_ns: 1_700_000_000_123_456_789,
            vif: 3,
            dir: Direction::Tx,
            orig_len: 60,
            data: vec![0; 14],
        };
        assert_eq!(
            header_line(&p),
            "22:13:20.123456 vif 3 tx 60 bytes (first 14)"
        );
        let mut out = Vec::new();
        let mut sink = TextSink::new(&mut out, false);
        sink.frame(&p).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with("22:13:20.123456 vif 3 tx"), "{text}");
        assert!(
            text.lines().nth(1).is_some_and(|l| l.starts_with("  ")),
            "{text}"
        );
    }

    #[test]
    fn pcap_records_keep_the_time_and_both_lengths() {
        let p = CapturedPacket {
            ts_ns: 1_700_000_000_123_456_789,
            vif: 0,
            dir: Direction::Rx,
            orig_len: 1500,
            data: vec![0xab; 64],
        };
        let mut out = Vec::new();
        let mut sink = PcapSink::new(&mut out).expect("header");
        sink.frame(&p).expect("write");
        assert_eq!(out.len(), 24 + 16 + 64);
        let rec = &out[24..40];
        let u = |o: usize| u32::from_le_bytes([rec[o], rec[o + 1], rec[o + 2], rec[o + 3]]);
        assert_eq!(
            (u(0), u(4), u(8), u(12)),
            (1_700_000_000, 123_456, 64, 1500)
        );
    }
}
