//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): the buffers that
//! multishot receives pick from. The io-uring crate exposes only the raw
//! entry type; this is the small manager around it.
//!
//! The ring holds buffer descriptors; the buffers themselves live in the
//! worker's slab. The kernel consumes descriptors from the head; we add
//! returned buffers at the tail and publish the tail with a release store.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// The descriptor ring for one buffer group.
#[derive(Debug)]
pub struct BufRing {
    ring: NonNull<BufRingEntry>,
    ring_bytes: usize,
    entries: u16,
    /// Our copy of the tail; published to the kernel by `publish`.
    tail: u16,
    bgid: u16,
}

// SAFETY: owned by one worker; only moved before the worker starts.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Maps a descriptor ring with `entries` slots (a power of two, at most 32768).
    pub fn new(entries: u16, bgid: u16) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer ring size must be a power of two up to 32768",
            ));
        }
        let ring_bytes = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: anonymous mapping, checked against MAP_FAILED; page aligned
        // as the kernel requires for a buffer ring.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ring = NonNull::new(ptr.cast::<BufRingEntry>())
            .ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(BufRing {
            ring,
            ring_bytes,
            entries,
            tail: 0,
            bgid,
        })
    }

    /// Registers the ring with `ring`'s submitter as buffer group `bgid`.
    pub fn register(&self, submitter: &io_uring::Submitter<'_>) -> io::Result<()> {
        // SAFETY: the mapping lives as long as `self`, and the worker drops
        // its io_uring (which unregisters everything) before its BufRing.
        unsafe {
            submitter.register_buf_ring_with_flags(
                self.ring.as_ptr() as u64,
                self.entries,
                self.bgid,
                0,
            )
        }
    }

    /// The buffer group id.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Queues buffer `bid` (at `addr`, `len` bytes) for the kernel; takes
    /// effect at the next `publish`.
    pub fn push(&mut self, bid: u16, addr: *mut u8, len: u32) {
        let mask = self.entries - 1;
        let idx = usize::from(self.tail & mask);
        // SAFETY: idx < entries, inside the mapping; the kernel only reads
        // slots between its head and our published tail, and this slot is
        // past the published tail.
        let entry = unsafe { &mut *self.ring.as_ptr().add(idx) };
        entry.set_addr(addr as u64);
        entry.set_len(len);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed buffer visible to the kernel.
    pub fn publish(&self) {
        // SAFETY: the tail field overlays entry 0's reserved field, which the
        // kernel reads and never writes; an atomic store with release
        // ordering publishes the entries written before it.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`, after the ring
        // that used it is gone.
        unsafe {
            libc::munmap(self.ring.as_ptr().cast(), self.ring_bytes);
        }
    }
}
