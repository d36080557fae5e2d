//! The smoltcp [`Device`] over the batched net hypercalls.
//!
//! Receive: one `NetRead` fills up to [`BATCH`] MTU-sized buffers of a ring; smoltcp
//! then consumes the frames one by one straight out of the ring (no copy). A round
//! ([`BatchDevice::begin_round`]) allows a bounded number of reads, and a read that
//! came back short ends reading for the round: the host had nothing more, so asking
//! again would only cost another exit.
//!
//! Transmit: smoltcp writes each frame straight into a free slot of a queue of
//! [`BATCH`] buffers; [`BatchDevice::flush`] sends the whole queue with one `NetWrite`
//! (the stack calls it at the end of every poll round, and [`Device::transmit`] calls
//! it when the queue is full). Frames the host could not take yet stay queued, in
//! order, for the next flush.

use alloc::vec;
use alloc::vec::Vec;
use septem_abi::{GuestAddr, HcError, NetFrame, NET_BATCH_MAX};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Frames per `NetRead`/`NetWrite`, and slots in each of the rx ring and tx queue.
pub const BATCH: usize = NET_BATCH_MAX as usize;

/// Reads per poll round while the host keeps returning full batches.
pub const READS_PER_ROUND: u32 = 2;

/// Moves batches of frames between the guest and a host device.
pub trait FrameIo {
    /// Receives up to `frames.len()` frames without blocking; entry `i`'s `len` is its
    /// buffer's capacity on entry and the frame's length on return. Returns how many
    /// entries (from the first) hold a frame.
    ///
    /// # Safety
    /// Every entry's `data .. data + len` must be valid for writes.
    unsafe fn read(&mut self, frames: &mut [NetFrame]) -> Result<usize, HcError>;

    /// Sends `frames` in order; returns how many (from the first) were taken.
    ///
    /// # Safety
    /// Every entry's `data .. data + len` must be valid for reads.
    unsafe fn write(&mut self, frames: &[NetFrame]) -> Result<usize, HcError>;
}

/// [`FrameIo`] through the `NetRead`/`NetWrite` hypercalls on one device.
#[derive(Debug)]
pub struct HypercallIo {
    /// Index of the device in `BootInfo::devices`.
    pub device: u32,
}

impl FrameIo for HypercallIo {
    unsafe fn read(&mut self, frames: &mut [NetFrame]) -> Result<usize, HcError> {
        let mut args = septem_abi::NetReadArgs {
            device: self.device,
            count: frames.len() as u32,
            frames: GuestAddr::new(frames.as_mut_ptr() as u64),
            done: 0,
            _pad: 0,
        };
        // SAFETY: `args` is a live NetReadArgs; its table is `frames`, whose buffers the
        // caller guarantees are writable for their lengths.
        let r = unsafe { crate::hypercall::hypercall(septem_abi::Hypercall::NetRead, &mut args) };
        HcError::check(r)?;
        Ok((args.done as usize).min(frames.len()))
    }

    unsafe fn write(&mut self, frames: &[NetFrame]) -> Result<usize, HcError> {
        let mut args = septem_abi::NetWriteArgs {
            device: self.device,
            count: frames.len() as u32,
            frames: GuestAddr::new(frames.as_ptr() as u64),
            done: 0,
            _pad: 0,
        };
        // SAFETY: `args` is a live NetWriteArgs; its table is `frames`, whose buffers the
        // caller guarantees are readable for their lengths. The monitor only writes `done`.
        let r = unsafe { crate::hypercall::hypercall(septem_abi::Hypercall::NetWrite, &mut args) };
        HcError::check(r)?;
        Ok((args.done as usize).min(frames.len()))
    }
}

/// Counters of one device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Frames received.
    pub rx_frames: u64,
    /// `NetRead` calls made (including those that found nothing).
    pub rx_calls: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// `NetWrite` calls made.
    pub tx_calls: u64,
    /// `NetWrite` calls that could not send the whole queue (host backpressure).
    pub tx_short: u64,
    /// Hypercall errors (frames dropped).
    pub errors: u64,
}

/// A ring of `BATCH` frame buffers in one allocation, with the table the host fills.
struct RxRing {
    buf: Vec<u8>,
    table: Vec<NetFrame>,
    frame_cap: usize,
    /// Frames `next..count` of the table are waiting to be consumed.
    next: usize,
    count: usize,
    /// Reads still allowed this round.
    reads_left: u32,
    /// The last read filled the whole table: the host may hold more.
    maybe_more: bool,
}

/// A queue of `BATCH` frame buffers; table entries `0..len` are queued, in order.
struct TxQueue {
    buf: Vec<u8>,
    table: Vec<NetFrame>,
    frame_cap: usize,
    len: usize,
}

/// The smoltcp device over a [`FrameIo`].
pub struct BatchDevice<I: FrameIo> {
    io: I,
    rx: RxRing,
    tx: TxQueue,
    mtu: usize,
    stats: DeviceStats,
}

impl<I: FrameIo> core::fmt::Debug for BatchDevice<I> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BatchDevice")
            .field("mtu", &self.mtu)
            .field("rx_waiting", &(self.rx.count - self.rx.next))
            .field("tx_queued", &self.tx.len)
            .field("stats", &self.stats)
            .finish()
    }
}

fn frame_table(buf: &mut [u8], frame_cap: usize) -> Vec<NetFrame> {
    buf.chunks_exact_mut(frame_cap)
        .map(|chunk| NetFrame {
            data: GuestAddr::new(chunk.as_mut_ptr() as u64),
            len: frame_cap as u32,
            _pad: 0,
        })
        .collect()
}

impl<I: FrameIo> BatchDevice<I> {
    /// A device for frames of up to `frame_cap` bytes (MTU + Ethernet header).
    pub fn new(io: I, frame_cap: usize) -> Self {
        let mut rx_buf = vec![0u8; frame_cap * BATCH];
        let mut tx_buf = vec![0u8; frame_cap * BATCH];
        // The tables hold the buffers' addresses: the Vecs are never resized or moved
        // out of (moving a Vec does not move its heap allocation).
        let rx_table = frame_table(&mut rx_buf, frame_cap);
        let tx_table = frame_table(&mut tx_buf, frame_cap);
        BatchDevice {
            io,
            rx: RxRing {
                buf: rx_buf,
                table: rx_table,
                frame_cap,
                next: 0,
                count: 0,
                reads_left: READS_PER_ROUND,
                maybe_more: true,
            },
            tx: TxQueue {
                buf: tx_buf,
                table: tx_table,
                frame_cap,
                len: 0,
            },
            mtu: frame_cap,
            stats: DeviceStats::default(),
        }
    }

    /// Starts a poll round: reading from the host is allowed again.
    pub fn begin_round(&mut self) {
        self.rx.reads_left = READS_PER_ROUND;
    }

    /// Tells the device the host signalled input (so reading is worth a call).
    pub fn note_input(&mut self) {
        self.rx.maybe_more = true;
    }

    /// True when frames may be waiting (in the ring, or at the host after a full
    /// batch): the caller should run another round instead of sleeping.
    #[must_use]
    pub fn rx_pending(&self) -> bool {
        self.rx.next < self.rx.count || self.rx.maybe_more
    }

    /// Frames queued for sending.
    #[must_use]
    pub fn tx_queued(&self) -> usize {
        self.tx.len
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// Sends the queued frames with one `NetWrite`. Frames the host did not take stay
    /// queued, first in line. Returns the number sent.
    pub fn flush(&mut self) -> usize {
        flush_tx(&mut self.io, &mut self.tx, &mut self.stats)
    }

    fn fill_rx(&mut self) {
        let rx = &mut self.rx;
        if rx.reads_left == 0 {
            return;
        }
        rx.reads_left -= 1;
        for e in &mut rx.table {
            e.len = rx.frame_cap as u32;
        }
        self.stats.rx_calls += 1;
        // SAFETY: every entry points at its own `frame_cap`-byte chunk of `rx.buf`,
        // which is live, unaliased (no token borrows it: `&mut self`) and writable.
        let n = match unsafe { self.io.read(&mut rx.table) } {
            Ok(n) => n,
            Err(_) => {
                self.stats.errors += 1;
                0
            }
        };
        rx.next = 0;
        rx.count = n;
        rx.maybe_more = n == BATCH;
        if n < BATCH {
            rx.reads_left = 0;
        }
        self.stats.rx_frames += n as u64;
    }
}

fn flush_tx<I: FrameIo>(io: &mut I, tx: &mut TxQueue, stats: &mut DeviceStats) -> usize {
    if tx.len == 0 {
        return 0;
    }
    stats.tx_calls += 1;
    // SAFETY: entries `0..len` point at chunks of `tx.buf` holding queued frames of
    // `len` bytes each (written through TxToken::consume).
    let sent = match unsafe { io.write(&tx.table[..tx.len]) } {
        Ok(n) => n,
        Err(_) => {
            // A failing device would fail again: drop the frames rather than wedge.
            stats.errors += 1;
            tx.len
        }
    };
    if sent < tx.len {
        stats.tx_short += 1;
    }
    // Keep the unsent entries first, in order; the sent ones (with their buffers)
    // become the free slots at the end.
    tx.table[..tx.len].rotate_left(sent);
    tx.len -= sent;
    stats.tx_frames += sent as u64;
    sent
}

/// A received frame, still in the rx ring.
#[derive(Debug)]
pub struct RxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.frame)
    }
}

/// A free slot of the tx queue.
#[derive(Debug)]
pub struct TxToken<'a> {
    queue: &'a mut TxQueue,
}

impl core::fmt::Debug for TxQueue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TxQueue({} queued)", self.len)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let q = self.queue;
        let len = len.min(q.frame_cap);
        let slot = q.len;
        let start = (q.table[slot].data.raw() - q.buf.as_ptr() as u64) as usize;
        let r = f(&mut q.buf[start..start + len]);
        q.table[slot].len = len as u32;
        q.len += 1;
        r
    }
}

impl<I: FrameIo> Device for BatchDevice<I> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        // A reply needs a free slot: without one, leave the input for the next round.
        if self.tx.len == BATCH {
            flush_tx(&mut self.io, &mut self.tx, &mut self.stats);
            if self.tx.len == BATCH {
                return None;
            }
        }
        if self.rx.next == self.rx.count {
            self.fill_rx();
            if self.rx.next == self.rx.count {
                return None;
            }
        }
        let rx = &mut self.rx;
        let i = rx.next;
        rx.next += 1;
        let len = (rx.table[i].len as usize).min(rx.frame_cap);
        let start = i * rx.frame_cap;
        Some((
            RxToken {
                frame: &rx.buf[start..start + len],
            },
            TxToken {
                queue: &mut self.tx,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        if self.tx.len == BATCH {
            flush_tx(&mut self.io, &mut self.tx, &mut self.stats);
            if self.tx.len == BATCH {
                return None;
            }
        }
        Some(TxToken {
            queue: &mut self.tx,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu;
        caps.max_burst_size = Some(BATCH);
        caps
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use phy::{RxToken as _, TxToken as _};
    use std::collections::VecDeque;

    /// An in-memory host side: frames to deliver, frames sent, a send limit.
    #[derive(Default)]
    pub(crate) struct MemIo {
        pub inbound: VecDeque<Vec<u8>>,
        pub outbound: Vec<Vec<u8>>,
        pub reads: usize,
        pub writes: usize,
        /// Frames the host takes per write (None: all).
        pub write_limit: Option<usize>,
    }

    impl FrameIo for MemIo {
        unsafe fn read(&mut self, frames: &mut [NetFrame]) -> Result<usize, HcError> {
            self.reads += 1;
            let mut n = 0;
            while n < frames.len() {
                let Some(f) = self.inbound.pop_front() else {
                    break;
                };
                let e = &mut frames[n];
                if f.len() > e.len as usize {
                    continue; // dropped, as the monitor does
                }
                // SAFETY: the caller guarantees the entry's buffer is writable for `len`.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(e.data.raw() as *mut u8, e.len as usize)
                };
                dst[..f.len()].copy_from_slice(&f);
                e.len = f.len() as u32;
                n += 1;
            }
            Ok(n)
        }

        unsafe fn write(&mut self, frames: &[NetFrame]) -> Result<usize, HcError> {
            self.writes += 1;
            let n = self
                .write_limit
                .map_or(frames.len(), |l| l.min(frames.len()));
            for e in &frames[..n] {
                // SAFETY: the caller guarantees the entry's buffer is readable for `len`.
                let src = unsafe {
                    std::slice::from_raw_parts(e.data.raw() as *const u8, e.len as usize)
                };
                self.outbound.push(src.to_vec());
            }
            Ok(n)
        }
    }

    fn frame(tag: u8, len: usize) -> Vec<u8> {
        vec![tag; len]
    }

    #[test]
    fn receive_reads_one_batch_and_serves_from_the_ring() {
        let mut io = MemIo::default();
        for i in 0..70u8 {
            io.inbound.push_back(frame(i, 60 + usize::from(i)));
        }
        let mut d = BatchDevice::new(io, 1514);
        let now = Instant::from_millis(0);
        let mut seen = Vec::new();
        while let Some((rx, _tx)) = d.receive(now) {
            seen.push(rx.consume(|f| (f[0], f.len())));
        }
        // Two reads allowed per round: 64 then 6 (short, so reading stops).
        assert_eq!(seen.len(), 70);
        assert_eq!(seen[69], (69, 129));
        assert_eq!(d.io.reads, 2);
        assert!(!d.rx_pending());
        // Nothing more this round, no further calls.
        assert!(d.receive(now).is_none());
        assert_eq!(d.io.reads, 2);
        d.begin_round();
        assert!(d.receive(now).is_none());
        assert_eq!(d.io.reads, 3);
        assert_eq!(d.stats().rx_frames, 70);
    }

    #[test]
    fn a_round_reads_at_most_its_budget() {
        let mut io = MemIo::default();
        for i in 0..200u32 {
            io.inbound.push_back(frame(i as u8, 64));
        }
        let mut d = BatchDevice::new(io, 1514);
        let mut n = 0;
        while d.receive(Instant::from_millis(0)).is_some() {
            n += 1;
        }
        assert_eq!(n, BATCH * READS_PER_ROUND as usize);
        assert!(d.rx_pending(), "a full batch means more may wait");
    }

    #[test]
    fn oversized_frames_are_dropped_by_the_host() {
        let mut io = MemIo::default();
        io.inbound.push_back(frame(1, 2000));
        io.inbound.push_back(frame(2, 100));
        let mut d = BatchDevice::new(io, 1514);
        let (rx, _) = d.receive(Instant::from_millis(0)).unwrap();
        assert_eq!(rx.consume(|f| (f[0], f.len())), (2, 100));
    }

    #[test]
    fn transmit_queues_and_flush_sends_one_batch() {
        let mut d = BatchDevice::new(MemIo::default(), 1514);
        let now = Instant::from_millis(0);
        for i in 0..10u8 {
            let t = d.transmit(now).unwrap();
            t.consume(100 + usize::from(i), |b| b.fill(i));
        }
        assert_eq!(d.tx_queued(), 10);
        assert_eq!(d.io.writes, 0);
        assert_eq!(d.flush(), 10);
        assert_eq!(d.io.writes, 1);
        assert_eq!(d.io.outbound.len(), 10);
        assert_eq!(d.io.outbound[3], frame(3, 103));
        assert_eq!(d.flush(), 0);
        assert_eq!(d.io.writes, 1, "an empty queue costs no call");
    }

    #[test]
    fn a_full_queue_flushes_and_short_writes_keep_order() {
        let io = MemIo {
            write_limit: Some(40),
            ..MemIo::default()
        };
        let mut d = BatchDevice::new(io, 1514);
        let now = Instant::from_millis(0);
        for i in 0..100u32 {
            let t = d.transmit(now).expect("queue has room after a flush");
            t.consume(60, |b| b.fill(i as u8));
        }
        // 64 queued, flush sent 40 at the 65th; 24 + 36 = 60 queued now.
        assert_eq!(d.io.outbound.len(), 40);
        assert_eq!(d.tx_queued(), 60);
        d.io.write_limit = None;
        d.flush();
        let tags: Vec<u8> = d.io.outbound.iter().map(|f| f[0]).collect();
        assert_eq!(tags, (0..100u32).map(|i| i as u8).collect::<Vec<_>>());
        assert_eq!(d.stats().tx_short, 1);
        assert_eq!(d.stats().tx_frames, 100);
    }

    #[test]
    fn a_host_that_takes_nothing_stops_transmit() {
        let io = MemIo {
            write_limit: Some(0),
            ..MemIo::default()
        };
        let mut d = BatchDevice::new(io, 1514);
        let now = Instant::from_millis(0);
        for _ in 0..BATCH {
            d.transmit(now).unwrap().consume(60, |_| ());
        }
        assert!(d.transmit(now).is_none());
        d.io.inbound.push_back(frame(7, 60));
        assert!(d.receive(now).is_none(), "no room for a reply: input waits");
        d.io.write_limit = None;
        assert!(d.receive(now).is_some());
    }
}
