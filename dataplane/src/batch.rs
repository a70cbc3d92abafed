//! Batches of packets with their per-packet metadata: the unit every pipeline stage works on.

use crate::buf::PktBuf;
use crate::drop::DropReason;
use crate::trap::TrapReason;

/// Most packets in one batch (one receive burst, one pipeline run).
pub const BATCH_SIZE: usize = 256;

/// What the pipeline does next with a packet. Stages skip packets that are not theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Freshly received: classify by input interface.
    Classify,
    /// An IPv4 packet (Ethernet header in front) to look up in `meta.vrf`.
    Lookup,
    /// Resolved to `meta.nh`; apply that nexthop.
    Nexthop,
    /// Ready to transmit on `meta.out_vif`.
    Tx,
    /// Hand to the agent with `meta.trap`.
    Trap,
    /// Done: dropped with `meta.drop`.
    Drop,
}

/// Per-packet forwarding metadata (Contrail's "fmd").
#[derive(Debug, Clone, Copy)]
pub struct PktMeta {
    /// Interface the packet arrived on.
    pub in_vif: u16,
    /// VRF the packet is being forwarded in.
    pub vrf: u16,
    /// Output interface, once known.
    pub out_vif: u16,
    /// Next step.
    pub next: Next,
    /// Why it was dropped, when `next == Drop`.
    pub drop: DropReason,
    /// Why it goes to the agent, when `next == Trap`.
    pub trap: TrapReason,
    /// Resolved nexthop id.
    pub nh: u32,
    /// MPLS label to push (from the route or ECMP member), or [`NO_LABEL`].
    pub label: u32,
    /// Decrement the inner TTL when forwarding (false after decapsulation: the sender did).
    pub dec_ttl: bool,
    /// A floating-IP SNAT was already tried for this packet.
    pub fip_tried: bool,
    /// Reason-specific value for the agent header when trapped (the MTU for `HandleDf`); with
    /// `frag`, the largest frame the output interface takes.
    pub trap_param: u32,
    /// Tunnelled and too big for the fabric without DF: [`crate::pipeline::Pipeline::output`]
    /// fragments the inner packet so each frame fits `trap_param` bytes.
    pub frag: bool,
}

/// "No label" marker in [`PktMeta::label`].
pub const NO_LABEL: u32 = u32::MAX;

impl PktMeta {
    /// Metadata for a packet just received on `vif`.
    #[inline]
    pub fn received(vif: u16) -> Self {
        Self {
            in_vif: vif,
            vrf: 0,
            out_vif: u16::MAX,
            next: Next::Classify,
            drop: DropReason::Misc,
            trap: TrapReason::None,
            nh: 0,
            label: NO_LABEL,
            dec_ttl: true,
            fip_tried: false,
            trap_param: 0,
            frag: false,
        }
    }

    /// Marks the packet dropped for `reason`.
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.next = Next::Drop;
        self.drop = reason;
    }

    /// Marks the packet for the agent.
    #[inline]
    pub fn trap(&mut self, reason: TrapReason) {
        self.next = Next::Trap;
        self.trap = reason;
    }

    /// Marks the packet for transmission on `vif`.
    #[inline]
    pub fn tx(&mut self, vif: u16) {
        self.next = Next::Tx;
        self.out_vif = vif;
    }
}

/// A packet and its metadata.
#[derive(Debug)]
pub struct Pkt {
    /// The bytes.
    pub buf: PktBuf,
    /// Where it is going.
    pub meta: PktMeta,
}

/// Up to [`BATCH_SIZE`] packets. The vector is allocated once; pushes never reallocate.
#[derive(Debug)]
pub struct Batch {
    pkts: Vec<Pkt>,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch with room for [`BATCH_SIZE`] packets.
    pub fn new() -> Self {
        Self {
            pkts: Vec::with_capacity(BATCH_SIZE),
        }
    }

    /// Number of packets.
    #[inline]
    pub fn len(&self) -> usize {
        self.pkts.len()
    }

    /// True when empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pkts.is_empty()
    }

    /// True when no more packets fit.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.pkts.len() >= BATCH_SIZE
    }

    /// Room left.
    #[inline]
    pub fn room(&self) -> usize {
        BATCH_SIZE - self.pkts.len()
    }

    /// Adds a packet received on `vif`. Gives the buffer back if the batch is full.
    #[inline]
    pub fn push(&mut self, buf: PktBuf, vif: u16) -> Result<(), PktBuf> {
        if self.is_full() {
            return Err(buf);
        }
        self.pkts.push(Pkt {
            buf,
            meta: PktMeta::received(vif),
        });
        Ok(())
    }

    /// The packets.
    #[inline]
    pub fn pkts(&self) -> &[Pkt] {
        &self.pkts
    }

    /// The packets, mutable.
    #[inline]
    pub fn pkts_mut(&mut self) -> &mut [Pkt] {
        &mut self.pkts
    }

    /// Removes and yields every packet, leaving the batch empty (capacity kept).
    #[inline]
    pub fn drain(&mut self) -> std::vec::Drain<'_, Pkt> {
        self.pkts.drain(..)
    }
}
