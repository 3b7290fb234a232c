//! Who holds each buffer of a worker's slab. A buffer is either free (ours,
//! unused), with the kernel (offered to a read or a receive through a
//! provided-buffer ring, or under an operation in flight), or held: a
//! packet in it is being handled, waits in a queue, or is being sent or
//! written. Holding is a token, a [`Hold`]: not `Copy`, not `Clone`, made
//! only by its pool and given back to it. A buffer that several sends read
//! at once (one GSO run cut into several sends, one frame flooded to every
//! VTEP) has one hold per send, taken with [`Pool::share`]; it is free
//! again after the last comes back.
//!
//! The pool keeps a ledger of every buffer's state and checks every
//! change: in tests and debug builds a double release, a buffer the
//! kernel hands over twice, or a hold dropped without being given back (a
//! leak) fails where it happens, with the buffer's number.

use std::marker::PhantomData;

/// A kind of buffer, for messages and to keep holds of one pool out of another.
pub trait Kind {
    /// What the buffers are called in messages.
    const NAME: &'static str;
}

/// Transmit slots: a device read, and the datagrams sealed from it.
#[derive(Debug)]
pub enum Tx {}
impl Kind for Tx {
    const NAME: &'static str = "transmit slot";
}

/// Provided receive buffers: a GRO receive, opened and written in place.
#[derive(Debug)]
pub enum Rx {}
impl Kind for Rx {
    const NAME: &'static str = "receive buffer";
}

/// Write slots: a coalesced super-packet on its way to the device.
#[derive(Debug)]
pub enum Wr {}
impl Kind for Wr {
    const NAME: &'static str = "write slot";
}

/// One hold on buffer `index` of a `K` pool. Give it back with
/// [`Pool::release`]; dropping it is a leak, which debug builds refuse.
#[must_use = "a hold must go back to its pool (Pool::release)"]
pub struct Hold<K: Kind> {
    index: u16,
    _kind: PhantomData<fn() -> K>,
}

impl<K: Kind> std::fmt::Debug for Hold<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hold({} {})", K::NAME, self.index)
    }
}

impl<K: Kind> Hold<K> {
    /// The buffer's number in its pool.
    #[inline]
    pub fn index(&self) -> usize {
        usize::from(self.index)
    }

    fn new(index: u16) -> Hold<K> {
        Hold {
            index,
            _kind: PhantomData,
        }
    }

    /// Ends the token without the drop check (the pool has accounted for it).
    fn consume(self) -> u16 {
        let i = self.index;
        std::mem::forget(self);
        i
    }
}

#[cfg(debug_assertions)]
impl<K: Kind> Drop for Hold<K> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!(
                "{} {} leaked: its hold was dropped without Pool::release",
                K::NAME,
                self.index
            );
        }
    }
}

/// The ledger's entry for one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Kernel,
    Held(u16),
}

/// Where a pool's free buffers go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Home {
    /// To a free list, for [`Pool::take_free`] (buffers we pick).
    FreeList,
    /// Back to the kernel through a provided-buffer ring (buffers the
    /// kernel picks): they wait in [`Pool::take_returned`] until the
    /// worker pushes them to the ring.
    Kernel,
}

/// The buffers of one kind: their states and holds, and where free ones go.
#[derive(Debug)]
pub struct Pool<K: Kind> {
    state: Box<[State]>,
    home: Home,
    /// Free buffers: for `take_free` (FreeList), or waiting to be handed
    /// to the kernel (Kernel), the latest freed last.
    free: Vec<u16>,
    in_kernel: usize,
    held: usize,
    _kind: PhantomData<fn() -> K>,
}

impl<K: Kind> Pool<K> {
    /// `count` buffers, all free (and, for a kernel-fed pool, waiting to
    /// be handed to the kernel).
    pub fn new(count: usize, home: Home) -> Pool<K> {
        assert!(count <= usize::from(u16::MAX), "{count} {}s", K::NAME);
        Pool {
            state: vec![State::Free; count].into_boxed_slice(),
            home,
            free: (0..count as u16).rev().collect(),
            in_kernel: 0,
            held: 0,
            _kind: PhantomData,
        }
    }

    /// Number of buffers.
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// Whether the pool has no buffers.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// Buffers with the kernel.
    pub fn in_kernel(&self) -> usize {
        self.in_kernel
    }

    /// Buffers held by at least one hold.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Free buffers (in the free list, or waiting to go to the kernel).
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    #[track_caller]
    fn expect(&self, index: u16, want: &str, ok: bool) {
        debug_assert!(
            ok,
            "{} {index}: expected {want}, the ledger says {:?}",
            K::NAME,
            self.state.get(usize::from(index))
        );
    }

    /// A free buffer, now held once; `None` if none is free (or the
    /// kernel picks this pool's buffers).
    pub fn take_free(&mut self) -> Option<Hold<K>> {
        if self.home != Home::FreeList {
            return None;
        }
        let i = self.free.pop()?;
        self.expect(i, "free", self.state[usize::from(i)] == State::Free);
        self.state[usize::from(i)] = State::Held(1);
        self.held += 1;
        Some(Hold::new(i))
    }

    /// Lends free buffer `hold` holds to an operation that will name it on
    /// completion (a fixed read): the hold ends, the buffer is the kernel's.
    #[track_caller]
    pub fn lend(&mut self, hold: Hold<K>) -> usize {
        let i = hold.consume();
        let s = &mut self.state[usize::from(i)];
        let was = *s;
        *s = State::Kernel;
        self.held -= 1;
        self.in_kernel += 1;
        self.expect(i, "held once", was == State::Held(1));
        usize::from(i)
    }

    /// The free buffers that wait for the kernel, now the kernel's: push
    /// each to the provided-buffer ring.
    pub fn take_returned(&mut self) -> impl Iterator<Item = usize> + '_ {
        let home = self.home;
        let returned = if home == Home::Kernel {
            self.free.len()
        } else {
            0
        };
        self.in_kernel += returned;
        let state = &mut self.state;
        self.free.drain(..returned).map(move |i| {
            state[usize::from(i)] = State::Kernel;
            usize::from(i)
        })
    }

    /// The kernel hands back buffer `index` (a completion named it): now
    /// held once. `None` if the index is beyond the pool.
    #[track_caller]
    pub fn from_kernel(&mut self, index: usize) -> Option<Hold<K>> {
        let i = u16::try_from(index).ok()?;
        let s = self.state.get_mut(index)?;
        let was = *s;
        *s = State::Held(1);
        self.in_kernel = self.in_kernel.saturating_sub(1);
        self.held += 1;
        self.expect(i, "with the kernel", was == State::Kernel);
        Some(Hold::new(i))
    }

    /// One more hold on the buffer `hold` holds.
    #[track_caller]
    pub fn share(&mut self, hold: &Hold<K>) -> Hold<K> {
        let s = &mut self.state[hold.index()];
        match s {
            State::Held(n) => *n += 1,
            other => {
                let was = *other;
                debug_assert!(false, "{} {}: shared while {was:?}", K::NAME, hold.index);
            }
        }
        Hold::new(hold.index)
    }

    /// Gives a hold back. After the buffer's last, it is free again: in
    /// the free list, or waiting to go back to the kernel. True then.
    #[track_caller]
    pub fn release(&mut self, hold: Hold<K>) -> bool {
        let i = hold.consume();
        let s = &mut self.state[usize::from(i)];
        match *s {
            State::Held(1) => {
                *s = State::Free;
                self.held -= 1;
                self.free.push(i);
                true
            }
            State::Held(n) => {
                *s = State::Held(n - 1);
                false
            }
            was => {
                debug_assert!(false, "{} {i}: released while {was:?}", K::NAME);
                false
            }
        }
    }

    /// Whether no buffer is held: after a drain, anything else is a leak.
    pub fn all_returned(&self) -> bool {
        self.held == 0
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn holds_are_counted_and_the_last_release_frees() {
        let mut p: Pool<Tx> = Pool::new(2, Home::FreeList);
        let a = p.take_free().unwrap();
        let a2 = p.share(&a);
        let b = p.take_free().unwrap();
        assert_eq!((a.index(), b.index()), (0, 1));
        assert!(p.take_free().is_none());
        assert_eq!(p.held(), 2);
        assert!(!p.release(a), "a second hold remains");
        assert!(p.release(a2));
        let again = p.take_free().unwrap();
        assert_eq!(again.index(), 0, "the latest freed comes first");
        assert!(p.release(again));
        let lent = p.lend(b);
        assert_eq!((lent, p.in_kernel()), (1, 1));
        let b = p.from_kernel(1).unwrap();
        assert!(p.release(b));
        assert!(p.all_returned());
        assert_eq!(p.free_count(), 2);
        assert_eq!(p.take_returned().count(), 0, "a free list keeps its own");
    }

    #[test]
    fn a_kernel_fed_pool_hands_its_free_buffers_back_in_batches() {
        let mut p: Pool<Rx> = Pool::new(4, Home::Kernel);
        assert!(p.take_free().is_none(), "the kernel picks these");
        assert_eq!(p.take_returned().collect::<Vec<_>>(), vec![3, 2, 1, 0]);
        assert_eq!(p.in_kernel(), 4);
        let h = p.from_kernel(3).unwrap();
        let h2 = p.share(&h);
        assert!(p.from_kernel(4).is_none(), "beyond the pool");
        assert!(!p.release(h));
        assert_eq!(p.take_returned().count(), 0, "still held");
        assert!(p.release(h2));
        assert_eq!(p.take_returned().collect::<Vec<_>>(), vec![3]);
        assert_eq!(p.in_kernel(), 4);
        assert!(p.all_returned());
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "transmit slot 0 leaked")]
    fn a_dropped_hold_is_a_leak() {
        let mut p: Pool<Tx> = Pool::new(1, Home::FreeList);
        let h = p.take_free().unwrap();
        drop(h);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "released while Free")]
    fn a_double_release_fails_where_it_happens() {
        let mut p: Pool<Wr> = Pool::new(1, Home::FreeList);
        let h = p.take_free().unwrap();
        let forged = Hold::<Wr>::new(h.index);
        let _ = p.release(h);
        let _ = p.release(forged);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "expected with the kernel")]
    fn a_buffer_the_kernel_does_not_have_cannot_come_back_from_it() {
        let mut p: Pool<Rx> = Pool::new(1, Home::FreeList);
        let h = p.take_free().unwrap();
        let _twice = p.from_kernel(h.index());
        std::mem::forget(h);
    }
}
