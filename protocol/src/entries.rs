//! Lists of fixed-size entries inside a reply (SHARD_STATUS_REPLY's shards, MEMBERS_REPLY's
//! members): one type for the two forms a list takes. Decoded, it is still the datagram's
//! bytes (no copy, no allocation: the decoder checked every entry, so reading one cannot
//! fail); built for encoding, it is the caller's slice. Two lists are equal when they hold
//! the same entries in the same order, whichever form each is in.

use core::fmt;

/// An entry of fixed length in a list ([`Entries`]).
pub trait WireEntry: Copy {
    /// Bytes of one entry on the wire.
    const LEN: usize;
    /// The entry in `raw` (exactly [`WireEntry::LEN`] bytes), which the message's decoder
    /// checked; `None` only for bytes the decoder refuses (never for a decoded list).
    fn read(raw: &[u8]) -> Option<Self>;
}

/// A list of entries of type `T`: see the module docs.
#[derive(Clone, Copy)]
pub struct Entries<'a, T> {
    repr: Repr<'a, T>,
}

#[derive(Clone, Copy)]
enum Repr<'a, T> {
    /// Exactly `count` entries of `T::LEN` bytes, checked by the message's decoder.
    Wire {
        bytes: &'a [u8],
        count: u16,
    },
    Values(&'a [T]),
}

impl<'a, T: WireEntry> Entries<'a, T> {
    /// No entries.
    pub const fn empty() -> Entries<'a, T> {
        Entries {
            repr: Repr::Values(&[]),
        }
    }

    /// Entries to encode.
    pub const fn from_slice(entries: &'a [T]) -> Entries<'a, T> {
        Entries {
            repr: Repr::Values(entries),
        }
    }

    /// `count` entries in `bytes`, which the caller (a decoder) checked: exactly
    /// `count * T::LEN` bytes, each entry valid.
    pub(crate) fn from_wire(bytes: &'a [u8], count: u16) -> Entries<'a, T> {
        debug_assert_eq!(bytes.len(), usize::from(count) * T::LEN);
        Entries {
            repr: Repr::Wire { bytes, count },
        }
    }

    /// Number of entries.
    pub const fn len(&self) -> usize {
        match self.repr {
            Repr::Wire { count, .. } => count as usize,
            Repr::Values(v) => v.len(),
        }
    }

    /// True if there is no entry.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries in order.
    pub fn iter(&self) -> EntryIter<'a, T> {
        EntryIter { repr: self.repr }
    }
}

impl<T: WireEntry + PartialEq> PartialEq for Entries<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<T: WireEntry + Eq> Eq for Entries<'_, T> {}

impl<T: WireEntry + fmt::Debug> fmt::Debug for Entries<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, T: WireEntry> IntoIterator for Entries<'a, T> {
    type Item = T;
    type IntoIter = EntryIter<'a, T>;
    fn into_iter(self) -> EntryIter<'a, T> {
        self.iter()
    }
}

/// Iterator over [`Entries`].
#[derive(Clone)]
pub struct EntryIter<'a, T> {
    /// What is left to yield.
    repr: Repr<'a, T>,
}

impl<T: WireEntry> Iterator for EntryIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match &mut self.repr {
            Repr::Values(v) => {
                let (first, rest) = v.split_first()?;
                *v = rest;
                Some(*first)
            }
            Repr::Wire { bytes, count } => {
                if *count == 0 {
                    return None;
                }
                let raw = bytes.get(..T::LEN)?;
                *bytes = bytes.get(T::LEN..)?;
                *count -= 1;
                T::read(raw)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = match self.repr {
            Repr::Wire { count, .. } => usize::from(count),
            Repr::Values(v) => v.len(),
        };
        (left, Some(left))
    }
}

impl<T: WireEntry> ExactSizeIterator for EntryIter<'_, T> {}
