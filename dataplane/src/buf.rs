//! Packet buffers with headroom, and the pool they are recycled through.
//!
//! A buffer is a fixed block allocated once when the pool is created: 2 KiB for ordinary
//! packets, [`BIG_BUF_SIZE`] for TCP GSO super-packets passed through whole (see [`crate::gso`]).
//! Packets start [`HEADROOM`] bytes in, so encapsulation prepends outer headers by moving `head`
//! back instead of copying the packet. Buffers move between pool, ports and batches by value (a
//! pointer and a few offsets); nothing is allocated per packet.

/// Bytes per buffer.
pub const BUF_SIZE: usize = 2048;
/// Bytes reserved in front of a received packet for outer headers (MPLSoUDP needs 32 more than
/// the Ethernet header it replaces; the agent header needs 16).
pub const HEADROOM: usize = 128;
/// Largest packet a buffer holds after the headroom.
pub const MAX_PKT_LEN: usize = BUF_SIZE - HEADROOM;
/// Bytes per large buffer: a whole GSO super-packet (IP total length <= 64 KiB) plus Ethernet
/// and tunnel headers fits after the headroom.
pub const BIG_BUF_SIZE: usize = 66 * 1024;
/// Largest packet a large buffer holds after the headroom.
pub const MAX_BIG_PKT_LEN: usize = BIG_BUF_SIZE - HEADROOM;

use std::ptr::NonNull;

/// Bytes at the very start of every block that hold a GSO packet's metadata (segment size,
/// type, inner header offset); `push_front` never reaches them.
const GSO_META: usize = 8;
/// `head` flag: the block is [`BIG_BUF_SIZE`] bytes (else [`BUF_SIZE`]).
const BIG: u32 = 1 << 31;
/// `head` flag: the packet is a GSO super-packet; its metadata is in the block's first bytes.
const GSO: u32 = 1 << 30;
/// `head` bits holding the packet's start offset.
const OFFSET: u32 = GSO - 1;

/// One packet buffer. `data()` is `block[head..head + len]`.
///
/// A buffer may carry a TCP/IPv4 GSO super-packet (`gso_size != 0`): one packet standing for
/// several MSS-sized segments, with its TCP checksum field holding only the pseudo-header sum
/// (the kernel's `CHECKSUM_PARTIAL`). [`crate::gso`] writes it out whole or cuts it up.
///
/// Layout: a thin pointer and two 32-bit words (16 bytes), because buffers are moved by value
/// several times per packet (pool, batch, transmit queue); the block size and the GSO mark are
/// flags in `head`, and the rarely read GSO details live in the block itself.
#[derive(Debug)]
pub struct PktBuf {
    /// Start of the block this buffer owns, `capacity()` bytes (from a boxed slice).
    block: NonNull<u8>,
    /// Packet start offset into the block, with the [`BIG`] and [`GSO`] flags.
    head: u32,
    len: u32,
}

// SAFETY: a `PktBuf` owns its block exclusively, exactly like the `Box<[u8]>` it was made from
// (nothing else holds the pointer), so moving it to another thread or sharing `&PktBuf` (which
// only reads) is as safe as for that box.
unsafe impl Send for PktBuf {}
// SAFETY: as above; `&PktBuf` only gives read access to the block.
unsafe impl Sync for PktBuf {}

impl Drop for PktBuf {
    fn drop(&mut self) {
        let cap = self.capacity();
        // SAFETY: `block` came from `Box::leak` of a boxed slice of exactly `cap` bytes in
        // `PktBuf::new` (the BIG flag records which size and never changes) and is freed only
        // here, once.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.block.as_ptr(),
                cap,
            )));
        }
    }
}

impl PktBuf {
    fn new(size: usize) -> Self {
        let big = size > BUF_SIZE;
        let size = if big { BIG_BUF_SIZE } else { BUF_SIZE };
        // Leaked here, reclaimed by `Drop` (a leaked box's pointer is what `into_raw` gives).
        let block = NonNull::from(Box::leak(vec![0u8; size].into_boxed_slice())).cast::<u8>();
        Self {
            block,
            head: HEADROOM as u32 | if big { BIG } else { 0 },
            len: 0,
        }
    }

    #[inline(always)]
    fn off(&self) -> usize {
        (self.head & OFFSET) as usize
    }

    #[inline(always)]
    fn set_off(&mut self, off: usize) {
        self.head = (self.head & !OFFSET) | off as u32;
    }

    /// The whole block.
    #[inline(always)]
    fn block(&self) -> &[u8] {
        // SAFETY: `block` points to `capacity()` initialised bytes owned by this buffer.
        unsafe { std::slice::from_raw_parts(self.block.as_ptr(), self.capacity()) }
    }

    /// The whole block, mutable.
    #[inline(always)]
    fn block_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `block`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.block.as_ptr(), self.capacity()) }
    }

    /// Bytes this buffer holds in all (headroom included).
    #[inline]
    pub fn capacity(&self) -> usize {
        if self.head & BIG != 0 {
            BIG_BUF_SIZE
        } else {
            BUF_SIZE
        }
    }

    /// True for a large buffer (from the pool's large list).
    #[inline]
    pub fn is_big(&self) -> bool {
        self.head & BIG != 0
    }

    /// True for a GSO super-packet (a flag test, for per-packet paths).
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.head & GSO != 0
    }

    /// Segment payload size if this is a GSO super-packet, else 0.
    #[inline]
    pub fn gso_size(&self) -> usize {
        if self.head & GSO == 0 {
            return 0;
        }
        let b = self.block();
        usize::from(u16::from_ne_bytes([b[0], b[1]]))
    }

    /// `VIRTIO_NET_HDR_GSO_*` type of a GSO super-packet.
    #[inline]
    pub fn gso_type(&self) -> u8 {
        if self.head & GSO == 0 {
            return 0;
        }
        self.block()[2]
    }

    /// Offset of the (inner) IPv4 header of a GSO packet from the current packet start, or
    /// `None` if the front was stripped past it (or this is not a GSO packet).
    #[inline]
    pub fn gso_l3(&self) -> Option<usize> {
        if self.head & GSO == 0 {
            return None;
        }
        let b = self.block();
        let l3 = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]) as usize;
        l3.checked_sub(self.off())
    }

    /// Marks the packet as a GSO super-packet of `gso_type` with segments of `size` payload
    /// bytes whose IPv4 header is `l3` bytes into the packet. `size == 0` clears the mark.
    #[inline]
    pub fn set_gso(&mut self, size: u16, gso_type: u8, l3: usize) {
        if size == 0 {
            self.clear_gso();
            return;
        }
        let at = (self.off() + l3) as u32;
        let b = self.block_mut();
        b[0..2].copy_from_slice(&size.to_ne_bytes());
        b[2] = gso_type;
        b[4..8].copy_from_slice(&at.to_ne_bytes());
        self.head |= GSO;
    }

    /// Makes this an ordinary packet again.
    #[inline]
    pub fn clear_gso(&mut self) {
        self.head &= !GSO;
    }

    /// The packet bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let (h, l) = (self.off(), self.len as usize);
        debug_assert!(h + l <= self.capacity());
        // SAFETY: every method that changes the offset or `len` keeps
        // `offset + len <= capacity()` (the invariant of this type), so the range is inside the
        // block. This is the hottest accessor of the packet path.
        unsafe { std::slice::from_raw_parts(self.block.as_ptr().add(h), l) }
    }

    /// The packet bytes, mutable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (h, l) = (self.off(), self.len as usize);
        debug_assert!(h + l <= self.capacity());
        // SAFETY: as in `data`; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.block.as_ptr().add(h), l) }
    }

    /// Packet length.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True for an empty packet.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes free in front of the packet.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.off()
    }

    /// Resets to an empty ordinary packet at the standard headroom.
    #[inline]
    pub fn reset(&mut self) {
        self.head = (self.head & BIG) | HEADROOM as u32;
        self.len = 0;
    }

    /// Copies `bytes` in as the whole packet (what a copying receive does). Returns false, leaving
    /// the buffer empty, if it does not fit.
    #[inline]
    pub fn fill(&mut self, bytes: &[u8]) -> bool {
        self.reset();
        let Some(area) = self.block_mut().get_mut(HEADROOM..HEADROOM + bytes.len()) else {
            return false;
        };
        area.copy_from_slice(bytes);
        self.len = bytes.len() as u32;
        true
    }

    /// The whole writable area after the headroom, for receive paths that write in place;
    /// follow with [`PktBuf::set_len`].
    #[inline]
    pub fn rx_area(&mut self) -> &mut [u8] {
        self.reset();
        &mut self.block_mut()[HEADROOM..]
    }

    /// Sets the packet length after writing into [`PktBuf::rx_area`]. Lengths beyond the buffer
    /// are clamped.
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.capacity() - self.off()) as u32;
    }

    // Invariant kept by every mutator below and above: offset + len <= capacity(), and
    // offset >= GSO_META.

    /// Prepends `n` bytes and returns the new front. `None` if the headroom is too small.
    #[inline]
    pub fn push_front(&mut self, n: usize) -> Option<&mut [u8]> {
        let head = self.off().checked_sub(n).filter(|h| *h >= GSO_META)?;
        self.set_off(head);
        self.len += n as u32;
        Some(self.data_mut())
    }

    /// Removes `n` bytes from the front. `None` (unchanged) if the packet is shorter.
    #[inline]
    pub fn pull_front(&mut self, n: usize) -> Option<()> {
        if n > self.len as usize {
            return None;
        }
        self.set_off(self.off() + n);
        self.len -= n as u32;
        Some(())
    }

    /// Moves the packet start by `delta` bytes: negative grows the front (prepend), positive
    /// strips it. Returns false, unchanged, if out of range.
    #[inline]
    pub fn adjust_front(&mut self, delta: isize) -> bool {
        let head = self.off() as isize + delta;
        let len = self.len as isize - delta;
        if head < GSO_META as isize || len < 0 {
            return false;
        }
        self.set_off(head as usize);
        self.len = len as u32;
        true
    }

    /// Shortens the packet to `len` bytes (drops trailing padding).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len as usize {
            self.len = len as u32;
        }
    }
}

/// A fixed set of buffers handed out and taken back without allocating: ordinary 2 KiB
/// buffers, and a few large ones for GSO super-packets.
///
/// Thread-safety: a pool belongs to one lcore (it is `Send`, not shared); ports and the pipeline
/// on that lcore borrow it mutably in turn.
#[derive(Debug)]
pub struct BufPool {
    free: Vec<PktBuf>,
    capacity: usize,
    big: Vec<PktBuf>,
    big_capacity: usize,
}

impl BufPool {
    /// Allocates `n` ordinary buffers up front, and no large ones.
    pub fn new(n: usize) -> Self {
        Self::with_big(n, 0)
    }

    /// Allocates `n` ordinary and `big` large ([`BIG_BUF_SIZE`]) buffers up front.
    pub fn with_big(n: usize, big: usize) -> Self {
        let mut free = Vec::with_capacity(n);
        free.extend((0..n).map(|_| PktBuf::new(BUF_SIZE)));
        let mut bigs = Vec::with_capacity(big);
        bigs.extend((0..big).map(|_| PktBuf::new(BIG_BUF_SIZE)));
        Self {
            free,
            capacity: n,
            big: bigs,
            big_capacity: big,
        }
    }

    /// Takes a buffer, reset to empty. `None` when exhausted.
    #[inline]
    pub fn alloc(&mut self) -> Option<PktBuf> {
        let mut b = self.free.pop()?;
        b.reset();
        Some(b)
    }

    /// Takes a buffer that holds a packet of `len` bytes: an ordinary one if it fits, else a
    /// large one. `None` when none is free or `len` exceeds [`MAX_BIG_PKT_LEN`].
    #[inline]
    pub fn alloc_for(&mut self, len: usize) -> Option<PktBuf> {
        if len <= MAX_PKT_LEN {
            return self.alloc();
        }
        if len > MAX_BIG_PKT_LEN {
            return None;
        }
        let mut b = self.big.pop()?;
        b.reset();
        Some(b)
    }

    /// Gives a buffer back.
    #[inline]
    pub fn free(&mut self, b: PktBuf) {
        // The free lists were allocated with room for every buffer, so this never reallocates
        // unless foreign buffers are returned; drop those instead of growing.
        if b.is_big() {
            if self.big.len() < self.big_capacity {
                self.big.push(b);
            }
        } else if self.free.len() < self.capacity {
            self.free.push(b);
        }
    }

    /// Large buffers currently available.
    pub fn big_available(&self) -> usize {
        self.big.len()
    }

    /// Buffers currently available.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Buffers this pool was created with.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_pull_move_the_front_without_copying() {
        let mut pool = BufPool::new(2);
        let mut b = pool.alloc().expect("pool has buffers");
        assert!(b.fill(&[1, 2, 3, 4]));
        b.push_front(2)
            .expect("headroom")
            .copy_from_slice(&[9, 8, 1, 2, 3, 4]);
        assert_eq!(b.data(), &[9, 8, 1, 2, 3, 4]);
        b.pull_front(3).expect("long enough");
        assert_eq!(b.data(), &[2, 3, 4]);
        assert!(b.pull_front(4).is_none());
        assert!(b.push_front(HEADROOM + 10).is_none());
        pool.free(b);
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn pool_exhausts_and_refills() {
        let mut pool = BufPool::new(1);
        let b = pool.alloc().expect("one buffer");
        assert!(pool.alloc().is_none());
        pool.free(b);
        assert!(pool.alloc().is_some());
    }

    #[test]
    fn large_buffers_come_from_their_own_list() {
        let mut pool = BufPool::with_big(1, 1);
        let mut b = pool.alloc_for(9000).expect("large buffer");
        assert!(b.is_big());
        assert!(b.fill(&[7; 9000]));
        b.set_gso(1448, 1, 14);
        assert_eq!((b.gso_size(), b.gso_l3()), (1448, Some(14)));
        b.push_front(50).expect("headroom");
        assert_eq!(b.gso_l3(), Some(64));
        assert!(pool.alloc_for(9000).is_none());
        assert!(pool.alloc_for(MAX_BIG_PKT_LEN + 1).is_none());
        pool.free(b);
        assert_eq!((pool.available(), pool.big_available()), (1, 1));
        let b = pool.alloc_for(9000).expect("returned");
        assert_eq!(b.gso_size(), 0);
    }

    #[test]
    fn oversize_fill_is_refused() {
        let mut pool = BufPool::new(1);
        let mut b = pool.alloc().expect("one buffer");
        assert!(!b.fill(&[0; MAX_PKT_LEN + 1]));
        assert!(b.is_empty());
    }
}
