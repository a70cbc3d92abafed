//! Packet buffers with headroom, and the pool they are recycled through.
//!
//! A buffer is a fixed 2 KiB block allocated once when the pool is created. Packets start
//! [`HEADROOM`] bytes in, so encapsulation prepends outer headers by moving `head` back instead
//! of copying the packet. Buffers move between pool, ports and batches by value (a pointer and two
//! offsets); nothing is allocated per packet.

/// Bytes per buffer.
pub const BUF_SIZE: usize = 2048;
/// Bytes reserved in front of a received packet for outer headers (MPLSoUDP needs 32 more than
/// the Ethernet header it replaces; the agent header needs 16).
pub const HEADROOM: usize = 128;
/// Largest packet a buffer holds after the headroom.
pub const MAX_PKT_LEN: usize = BUF_SIZE - HEADROOM;

/// One packet buffer. `data()` is `block[head..head + len]`.
#[derive(Debug)]
pub struct PktBuf {
    block: Box<[u8; BUF_SIZE]>,
    head: u16,
    len: u16,
}

impl PktBuf {
    fn new() -> Self {
        Self {
            block: Box::new([0u8; BUF_SIZE]),
            head: HEADROOM as u16,
            len: 0,
        }
    }

    /// The packet bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let (h, l) = (usize::from(self.head), usize::from(self.len));
        debug_assert!(h + l <= BUF_SIZE);
        // SAFETY: every method that changes `head` or `len` keeps `head + len <= BUF_SIZE`
        // (the invariant of this type), so the range is inside `block`. This is the hottest
        // accessor of the packet path; the bounds check it saves is taken several times a packet.
        unsafe { self.block.get_unchecked(h..h + l) }
    }

    /// The packet bytes, mutable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (h, l) = (usize::from(self.head), usize::from(self.len));
        debug_assert!(h + l <= BUF_SIZE);
        // SAFETY: as in `data`: `head + len <= BUF_SIZE` always holds.
        unsafe { self.block.get_unchecked_mut(h..h + l) }
    }

    /// Packet length.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True for an empty packet.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes free in front of the packet.
    #[inline]
    pub fn headroom(&self) -> usize {
        usize::from(self.head)
    }

    /// Resets to an empty packet at the standard headroom.
    #[inline]
    pub fn reset(&mut self) {
        self.head = HEADROOM as u16;
        self.len = 0;
    }

    /// Copies `bytes` in as the whole packet (what a copying receive does). Returns false, leaving
    /// the buffer empty, if it does not fit.
    #[inline]
    pub fn fill(&mut self, bytes: &[u8]) -> bool {
        self.reset();
        if bytes.len() > MAX_PKT_LEN {
            return false;
        }
        self.block[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(bytes);
        self.len = bytes.len() as u16;
        true
    }

    /// The whole writable area after the headroom, for receive paths that write in place;
    /// follow with [`PktBuf::set_len`].
    #[inline]
    pub fn rx_area(&mut self) -> &mut [u8] {
        self.reset();
        &mut self.block[HEADROOM..]
    }

    /// Sets the packet length after writing into [`PktBuf::rx_area`]. Lengths beyond the buffer
    /// are clamped.
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(BUF_SIZE - usize::from(self.head)) as u16;
    }

    // Invariant kept by every mutator below and above: head + len <= BUF_SIZE.

    /// Prepends `n` bytes and returns the new front. `None` if the headroom is too small.
    #[inline]
    pub fn push_front(&mut self, n: usize) -> Option<&mut [u8]> {
        let head = usize::from(self.head).checked_sub(n)?;
        self.head = head as u16;
        self.len += n as u16;
        Some(self.data_mut())
    }

    /// Removes `n` bytes from the front. `None` (unchanged) if the packet is shorter.
    #[inline]
    pub fn pull_front(&mut self, n: usize) -> Option<()> {
        if n > usize::from(self.len) {
            return None;
        }
        self.head += n as u16;
        self.len -= n as u16;
        Some(())
    }

    /// Moves the packet start by `delta` bytes: negative grows the front (prepend), positive
    /// strips it. Returns false, unchanged, if out of range.
    #[inline]
    pub fn adjust_front(&mut self, delta: isize) -> bool {
        let head = usize::from(self.head) as isize + delta;
        let len = usize::from(self.len) as isize - delta;
        if head < 0 || len < 0 {
            return false;
        }
        self.head = head as u16;
        self.len = len as u16;
        true
    }

    /// Shortens the packet to `len` bytes (drops trailing padding).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < usize::from(self.len) {
            self.len = len as u16;
        }
    }
}

/// A fixed set of buffers handed out and taken back without allocating.
///
/// Thread-safety: a pool belongs to one lcore (it is `Send`, not shared); ports and the pipeline
/// on that lcore borrow it mutably in turn.
#[derive(Debug)]
pub struct BufPool {
    free: Vec<PktBuf>,
    capacity: usize,
}

impl BufPool {
    /// Allocates `n` buffers up front.
    pub fn new(n: usize) -> Self {
        let mut free = Vec::with_capacity(n);
        free.extend((0..n).map(|_| PktBuf::new()));
        Self { free, capacity: n }
    }

    /// Takes a buffer, reset to empty. `None` when exhausted.
    #[inline]
    pub fn alloc(&mut self) -> Option<PktBuf> {
        let mut b = self.free.pop()?;
        b.reset();
        Some(b)
    }

    /// Gives a buffer back.
    #[inline]
    pub fn free(&mut self, b: PktBuf) {
        // The free list was allocated with room for every buffer, so this never reallocates
        // unless foreign buffers are returned; drop those instead of growing.
        if self.free.len() < self.capacity {
            self.free.push(b);
        }
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
    fn oversize_fill_is_refused() {
        let mut pool = BufPool::new(1);
        let mut b = pool.alloc().expect("one buffer");
        assert!(!b.fill(&[0; MAX_PKT_LEN + 1]));
        assert!(b.is_empty());
    }
}
