//! One worker's packet memory: a single anonymous mapping, allocated and
//! touched once at start, registered with the worker's ring as fixed buffer
//! 0, and carved into fixed regions. Nothing here grows with traffic.
//!
//! Registering the whole slab as one fixed buffer lets `ReadFixed` and
//! `WriteFixed` use any address inside it, including the provided buffers
//! that multishot receives fill, so a decrypted packet is written to the
//! device from where it was received.

use std::io;
use std::ptr::NonNull;

/// An owned, page-aligned, pre-faulted anonymous mapping.
#[derive(Debug)]
pub struct Slab {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the slab is plain memory owned by one worker; moving the owner
// between threads before the worker starts is fine.
unsafe impl Send for Slab {}

impl Slab {
    /// Maps `len` bytes (rounded up to a page), pre-faulted so the first
    /// packets do not pay for page faults.
    pub fn new(len: usize) -> io::Result<Slab> {
        let page = 4096;
        let len = len.div_ceil(page) * page;
        // SAFETY: an anonymous private mapping with no address hint; the
        // result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Slab { base, len })
    }

    /// Start of the mapping.
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the slab is empty (never, once mapped).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The iovec that registers the whole slab as one fixed buffer.
    pub fn iovec(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.base.as_ptr().cast(),
            iov_len: self.len,
        }
    }

    /// A mutable view of `len` bytes at `offset`.
    ///
    /// The view's lifetime is not tied to `&self`, so a worker can hold a
    /// packet and call its own methods: the slab is raw memory whose ranges
    /// are owned by the operations the worker tracks, not by borrows.
    ///
    /// # Safety
    /// The caller must hold the only reference to that range: the kernel is
    /// not reading or writing it (no operation in flight on it), no other
    /// live slice overlaps it, and the slab outlives the view.
    #[allow(clippy::mut_from_ref)] // the slab hands out disjoint ranges; the caller proves exclusivity
    pub unsafe fn slice_mut<'a>(&self, offset: usize, len: usize) -> &'a mut [u8] {
        debug_assert!(offset + len <= self.len);
        // SAFETY: in bounds (checked above in debug, by construction of the
        // fixed layout otherwise); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(offset), len) }
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`. The ring that
        // registered it is dropped first (field order in the worker).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// A carve-out of the slab: `count` equal regions of `size` bytes starting
/// at `offset`.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    /// Byte offset of region 0 in the slab.
    pub offset: usize,
    /// Bytes per region (a multiple of 64 so regions do not share cache lines).
    pub size: usize,
    /// Number of regions.
    pub count: usize,
}

impl Region {
    /// Offset of region `i` in the slab.
    pub fn at(&self, i: usize) -> usize {
        self.offset + i * self.size
    }

    /// One past the last byte.
    pub fn end(&self) -> usize {
        self.offset + self.size * self.count
    }
}

/// Lays regions out one after another.
#[derive(Debug, Default)]
pub struct Layout {
    next: usize,
}

impl Layout {
    /// Reserves `count` regions of at least `size` bytes.
    pub fn region(&mut self, size: usize, count: usize) -> Region {
        let size = size.div_ceil(64) * 64;
        let r = Region {
            offset: self.next,
            size,
            count,
        };
        self.next = r.end().div_ceil(4096) * 4096;
        r
    }

    /// Total bytes needed.
    pub fn total(&self) -> usize {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_do_not_overlap_and_are_aligned() {
        let mut l = Layout::default();
        let a = l.region(1000, 3);
        let b = l.region(65_600, 2);
        assert_eq!(a.size % 64, 0);
        assert!(a.end() <= b.offset);
        assert_eq!(b.offset % 4096, 0);
        let slab = Slab::new(l.total()).expect("mmap");
        assert!(slab.len() >= b.end());
        // SAFETY: nothing else references the slab in this test.
        let s = unsafe { slab.slice_mut(b.at(1), b.size) };
        s.fill(0xab);
        assert!(s.iter().all(|&x| x == 0xab));
    }
}
