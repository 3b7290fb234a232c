//! Peers by stable id: a slot map whose ids carry the generation of the
//! slot's occupant, so a peer can be added and removed while the tunnel
//! runs and an id kept from before a removal never reaches the slot's next
//! occupant (it finds nothing instead).
//!
//! One table owns everything about each peer (the WireGuard control plane
//! keeps its configuration, sessions, timers and the handle of its shared
//! state and counters here); snapshots for the workers are built from it.

use std::fmt;

/// A peer's stable handle: its slot in the table and the generation of the
/// slot's occupant. Cheap to copy; checked on every use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId {
    slot: u32,
    generation: u32,
}

impl PeerId {
    /// An id made outside a table, for lookup tables built by hand
    /// (benchmarks, tests). A table hands out its own.
    pub const fn new(slot: u32, generation: u32) -> PeerId {
        PeerId { slot, generation }
    }

    /// The slot: a small index, dense while peers are few.
    #[inline]
    pub const fn slot(self) -> usize {
        self.slot as usize
    }

    /// How many occupants the slot had before this one.
    pub const fn generation(self) -> u32 {
        self.generation
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer#{}.{}", self.slot, self.generation)
    }
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// Values by [`PeerId`]. Insert, remove and look up are O(1); iteration is
/// in slot order.
pub struct PeerTable<T> {
    slots: Vec<Slot<T>>,
    /// Empty slots to reuse, the most recently freed last.
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for PeerTable<T> {
    fn default() -> Self {
        PeerTable {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> fmt::Debug for PeerTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTable")
            .field("len", &self.len)
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl<T> PeerTable<T> {
    /// An empty table.
    pub fn new() -> PeerTable<T> {
        PeerTable::default()
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no peer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One more than the highest slot in use: the size of an array indexed
    /// by [`PeerId::slot`].
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Adds `value`; returns its id. A freed slot is reused with the next
    /// generation; a slot whose generation is exhausted is retired.
    pub fn insert(&mut self, value: T) -> PeerId {
        self.len += 1;
        while let Some(slot) = self.free.pop() {
            let s = &mut self.slots[slot as usize];
            if let Some(generation) = s.generation.checked_add(1) {
                s.generation = generation;
                s.value = Some(value);
                return PeerId { slot, generation };
            }
        }
        let slot = self.slots.len() as u32;
        self.slots.push(Slot {
            generation: 0,
            value: Some(value),
        });
        PeerId {
            slot,
            generation: 0,
        }
    }

    /// Removes the peer `id`; `None` if it is not (or no longer) here.
    pub fn remove(&mut self, id: PeerId) -> Option<T> {
        let s = self.slots.get_mut(id.slot())?;
        if s.generation != id.generation {
            return None;
        }
        let v = s.value.take()?;
        self.len -= 1;
        self.free.push(id.slot);
        Some(v)
    }

    /// The peer `id`, if it is still here.
    #[inline]
    pub fn get(&self, id: PeerId) -> Option<&T> {
        let s = self.slots.get(id.slot())?;
        (s.generation == id.generation)
            .then_some(s.value.as_ref())
            .flatten()
    }

    /// The peer `id`, mutably, if it is still here.
    #[inline]
    pub fn get_mut(&mut self, id: PeerId) -> Option<&mut T> {
        let s = self.slots.get_mut(id.slot())?;
        if s.generation != id.generation {
            return None;
        }
        s.value.as_mut()
    }

    /// Whether `id` names a peer of this table.
    pub fn contains(&self, id: PeerId) -> bool {
        self.get(id).is_some()
    }

    /// Every peer with its id, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (PeerId, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let id = PeerId {
                slot: i as u32,
                generation: s.generation,
            };
            s.value.as_ref().map(|v| (id, v))
        })
    }

    /// Every peer with its id, mutably, in slot order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (PeerId, &mut T)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, s)| {
            let id = PeerId {
                slot: i as u32,
                generation: s.generation,
            };
            s.value.as_mut().map(|v| (id, v))
        })
    }

    /// Every id, in slot order.
    pub fn ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.iter().map(|(id, _)| id)
    }

    /// The id of the peer in `slot`, if there is one.
    pub fn id_at(&self, slot: usize) -> Option<PeerId> {
        let s = self.slots.get(slot)?;
        s.value.as_ref().map(|_| PeerId {
            slot: slot as u32,
            generation: s.generation,
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn an_id_from_before_a_removal_never_reaches_the_next_occupant() {
        let mut t = PeerTable::new();
        let a = t.insert("a");
        let b = t.insert("b");
        assert_eq!(t.remove(a), Some("a"));
        assert_eq!(t.remove(a), None, "removed once");
        let c = t.insert("c");
        assert_eq!(c.slot(), a.slot(), "the slot is reused");
        assert_ne!(c, a);
        assert_eq!(t.get(a), None, "the old id finds nothing");
        assert_eq!(t.get_mut(a), None);
        assert_eq!(t.remove(a), None, "and cannot remove the new occupant");
        assert_eq!(t.get(c), Some(&"c"));
        assert_eq!(t.get(b), Some(&"b"));
        assert_eq!(t.len(), 2);
        assert_eq!(t.ids().collect::<Vec<_>>(), vec![c, b]);
        assert_eq!(t.id_at(a.slot()), Some(c));
        assert_eq!(t.id_at(7), None);
    }

    #[test]
    fn an_exhausted_slot_is_retired() {
        let mut t = PeerTable::new();
        let a = t.insert(1);
        t.slots[a.slot()].generation = u32::MAX;
        let a = PeerId::new(a.slot, u32::MAX);
        assert_eq!(t.remove(a), Some(1));
        let b = t.insert(2);
        assert_ne!(b.slot(), a.slot(), "no generation left: a new slot");
        assert_eq!(t.slots(), 2);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn ids_print_slot_and_generation() {
        assert_eq!(PeerId::new(3, 2).to_string(), "peer#3.2");
    }
}
