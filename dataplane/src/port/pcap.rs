//! Classic pcap files (the format tcpdump and tshark read): replay a capture as a port's
//! receive side, record a port's output for inspection with a decoder we did not write.

use super::Port;
use crate::batch::Batch;
use crate::buf::{BufPool, PktBuf, MAX_PKT_LEN};
use std::io::{self, BufWriter, Read, Write};

const MAGIC: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;

/// Writes Ethernet frames to a pcap stream.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h)?;
        Ok(Self { out })
    }

    /// Appends one frame stamped with the current time.
    pub fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.write_packet(now.as_nanos() as u64, frame.len() as u32, frame)
    }

    /// Appends the first bytes of a frame that was `orig_len` bytes long, seen at `ts_ns`
    /// (nanoseconds since the Unix epoch; the file keeps microseconds).
    pub fn write_packet(&mut self, ts_ns: u64, orig_len: u32, data: &[u8]) -> io::Result<()> {
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
        rec[4..8].copy_from_slice(&((ts_ns % 1_000_000_000 / 1000) as u32).to_le_bytes());
        rec[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        rec[12..16].copy_from_slice(&orig_len.max(data.len() as u32).to_le_bytes());
        self.out.write_all(&rec)?;
        self.out.write_all(data)
    }

    /// Flushes buffered output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Reads every frame of a pcap stream (either byte order, microsecond or nanosecond stamps).
pub fn read_frames(mut input: impl Read) -> io::Result<Vec<Vec<u8>>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut h = [0u8; 24];
    input.read_exact(&mut h)?;
    let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => return Err(bad("not a pcap file")),
    };
    let rd = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    if rd(&h[20..24]) != LINKTYPE_ETHERNET {
        return Err(bad("pcap link type is not Ethernet"));
    }
    let mut frames = Vec::new();
    loop {
        let mut rec = [0u8; 16];
        match input.read_exact(&mut rec) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let incl = rd(&rec[8..12]) as usize;
        if incl > 262_144 {
            return Err(bad("pcap record too large"));
        }
        let mut f = vec![0u8; incl];
        input.read_exact(&mut f)?;
        frames.push(f);
    }
    Ok(frames)
}

/// A port that receives the frames of a pcap file once and writes what it transmits to another.
#[derive(Debug)]
pub struct PcapPort {
    name: String,
    rx: std::vec::IntoIter<Vec<u8>>,
    tx: Option<PcapWriter<BufWriter<std::fs::File>>>,
}

impl PcapPort {
    /// Replays `input` (if given) and records to `output` (if given).
    pub fn open(
        name: &str,
        input: Option<&std::path::Path>,
        output: Option<&std::path::Path>,
    ) -> io::Result<Self> {
        let frames = match input {
            Some(p) => read_frames(io::BufReader::new(std::fs::File::open(p)?))?,
            None => Vec::new(),
        };
        let tx = match output {
            Some(p) => Some(PcapWriter::new(BufWriter::new(std::fs::File::create(p)?))?),
            None => None,
        };
        Ok(Self {
            name: name.to_string(),
            rx: frames.into_iter(),
            tx,
        })
    }

    /// Flushes the output file.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.tx {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Port for PcapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, pool: &mut BufPool, batch: &mut Batch, vif: u16) -> usize {
        let mut n = 0;
        while !batch.is_full() {
            let Some(f) = self.rx.next() else { break };
            if f.len() > MAX_PKT_LEN {
                continue;
            }
            let Some(mut b) = pool.alloc() else { break };
            b.fill(&f);
            if let Err(b) = batch.push(b, vif) {
                pool.free(b);
                break;
            }
            n += 1;
        }
        n
    }

    fn tx_burst(&mut self, pool: &mut BufPool, pkts: &mut Vec<PktBuf>) -> usize {
        let n = pkts.len();
        for b in pkts.drain(..) {
            if let Some(w) = &mut self.tx {
                if let Err(e) = w.write_frame(b.data()) {
                    log::warn!("pcap port {}: write failed: {e}", self.name);
                }
            }
            pool.free(b);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips() {
        let mut v = Vec::new();
        {
            let mut w = PcapWriter::new(&mut v).expect("header");
            w.write_frame(&[1, 2, 3]).expect("frame");
            w.write_frame(&[4; 60]).expect("frame");
        }
        let frames = read_frames(&v[..]).expect("reads back");
        assert_eq!(frames, vec![vec![1, 2, 3], vec![4; 60]]);
        assert!(read_frames(&[0u8; 24][..]).is_err());
    }
}
