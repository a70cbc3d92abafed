//! In-memory ports: the test and benchmark device, like DPDK's `net_null`/`net_ring`.

use super::Port;
use crate::batch::Batch;
use crate::buf::{BufPool, PktBuf};
use std::collections::VecDeque;

/// What a [`MemPort`] receives.
#[derive(Debug)]
enum Source {
    /// Frames queued by [`MemPort::inject`], each received once.
    Queue(VecDeque<Vec<u8>>),
    /// Template frames received round-robin forever (a traffic generator).
    Cycle { frames: Vec<Vec<u8>>, next: usize },
}

/// An in-memory port. Receive copies frames into pool buffers (as a NIC's DMA would fill
/// them); transmit either records the frames or only counts them and recycles the buffers.
#[derive(Debug)]
pub struct MemPort {
    name: String,
    source: Source,
    capture: Option<Vec<Vec<u8>>>,
    /// Frames received.
    pub rx_count: u64,
    /// Frames transmitted.
    pub tx_count: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
}

impl MemPort {
    /// A port that receives what is injected and records what is transmitted.
    pub fn recording(name: &str) -> Self {
        Self {
            name: name.to_string(),
            source: Source::Queue(VecDeque::new()),
            capture: Some(Vec::new()),
            rx_count: 0,
            tx_count: 0,
            tx_bytes: 0,
        }
    }

    /// A port that receives `frames` round-robin without end and only counts what it sends.
    pub fn generator(name: &str, frames: Vec<Vec<u8>>) -> Self {
        Self {
            name: name.to_string(),
            source: Source::Cycle { frames, next: 0 },
            capture: None,
            rx_count: 0,
            tx_count: 0,
            tx_bytes: 0,
        }
    }

    /// A port that receives nothing and only counts what it sends.
    pub fn sink(name: &str) -> Self {
        Self::generator(name, Vec::new())
    }

    /// Queues a frame to be received.
    pub fn inject(&mut self, frame: &[u8]) {
        if let Source::Queue(q) = &mut self.source {
            q.push_back(frame.to_vec());
        }
    }

    /// Frames transmitted so far (recording ports), leaving the record empty.
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        self.capture
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

impl Port for MemPort {
    fn name(&self) -> &str {
        &self.name
    }

    #[inline]
    fn rx_burst(&mut self, pool: &mut BufPool, batch: &mut Batch, vif: u16) -> usize {
        let mut n = 0;
        while !batch.is_full() {
            let frame: &[u8] = match &mut self.source {
                Source::Queue(q) => match q.front() {
                    Some(f) => f,
                    None => break,
                },
                Source::Cycle { frames, next } => {
                    if frames.is_empty() {
                        break;
                    }
                    let f = &frames[*next];
                    *next = if *next + 1 == frames.len() {
                        0
                    } else {
                        *next + 1
                    };
                    f
                }
            };
            let Some(mut b) = pool.alloc() else { break };
            if !b.fill(frame) {
                pool.free(b);
                if let Source::Queue(q) = &mut self.source {
                    q.pop_front();
                }
                continue;
            }
            if let Source::Queue(q) = &mut self.source {
                q.pop_front();
            }
            if let Err(b) = batch.push(b, vif) {
                pool.free(b);
                break;
            }
            n += 1;
        }
        self.rx_count += n as u64;
        n
    }

    #[inline]
    fn tx_burst(&mut self, pool: &mut BufPool, pkts: &mut Vec<PktBuf>) -> usize {
        let n = pkts.len();
        for b in pkts.drain(..) {
            self.tx_bytes += b.len() as u64;
            if let Some(c) = &mut self.capture {
                c.push(b.data().to_vec());
            }
            pool.free(b);
        }
        self.tx_count += n as u64;
        n
    }
}
