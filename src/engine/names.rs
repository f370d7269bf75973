//! A per-thread memo of names resolved for increments by (class, path), so
//! that a repeated name skips validation, the registry's lock and its
//! string maps while the registry is unchanged, much as a
//! [`CounterHandle`](crate::CounterHandle) does.
//!
//! Each thread keeps a small direct-mapped table, keyed by engine, class
//! and path; an entry holds the roll-up targets and the registry
//! generation they were resolved at, and is used only while the
//! registry's generation is still that one. A miss resolves through the
//! registry as before and takes the slot over.
//!
//! A name is looked up by its [`Fingerprint`]: its length and two words
//! loaded from its ends, which for a name of up to 16 bytes (the common
//! case: `shares`, `/news/sport`) are all of it, so that a hit on short
//! names costs a few word comparisons, no hashing of bytes and no call to
//! `memcmp`. Longer names are also compared in full.

use std::cell::{Cell, RefCell};

use super::targets::TargetBuf;

/// Slots per thread; a name that collides with another merely resolves again.
const SLOTS: usize = 64;

/// Names of up to this many bytes are wholly held by their [`Fingerprint`].
const SHORT: usize = 16;

/// A name's length and the little-endian words at its start and its end
/// (overlapping for 9 to 16 bytes; zero-padded below 8). Two names of up
/// to [`SHORT`] bytes are equal exactly when their fingerprints are.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: usize,
    head: u64,
    tail: u64,
}

impl Fingerprint {
    #[inline(always)]
    fn of(name: &str) -> Fingerprint {
        let bytes = name.as_bytes();
        let len = bytes.len();
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let half = |at: usize| {
            u64::from(u32::from_le_bytes(
                bytes[at..at + 4].try_into().unwrap_or_default(),
            ))
        };
        let (head, tail) = match len {
            8.. => (word(0), word(len - 8)),
            4..=7 => (half(0), half(len - 4)),
            _ => (
                bytes
                    .iter()
                    .enumerate()
                    .fold(0, |word, (i, &byte)| word | u64::from(byte) << (8 * i)),
                0,
            ),
        };
        Fingerprint { len, head, tail }
    }

    /// A mix of the fingerprint's bits, for picking a slot.
    #[inline(always)]
    fn mix(self) -> u64 {
        (self.head ^ self.tail.rotate_left(29) ^ self.len as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// Which name a slot remembers: for which engine, registry generation and
/// names. Slots are `Copy`, so that the thread-local table needs no
/// destructor, borrow flag or lazy initialisation to be read; the targets
/// are kept apart, and copied out only on a match.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    engine: u64,
    generation: u64,
    class: Fingerprint,
    path: Fingerprint,
}

/// A key no lookup matches: engine ids start at 1.
const EMPTY: Key = Key {
    engine: 0,
    generation: 0,
    class: Fingerprint {
        len: 0,
        head: 0,
        tail: 0,
    },
    path: Fingerprint {
        len: 0,
        head: 0,
        tail: 0,
    },
};

/// The targets of an empty slot.
const NO_TARGETS: TargetBuf = TargetBuf::EMPTY;

thread_local! {
    static KEYS: [Cell<Key>; SLOTS] = const { [const { Cell::new(EMPTY) }; SLOTS] };
    static TARGETS: [Cell<TargetBuf>; SLOTS] = const { [const { Cell::new(NO_TARGETS) }; SLOTS] };
    /// The full names of the slots whose class or path is longer than
    /// [`SHORT`] bytes (their fingerprints do not hold all of them).
    static LONG_NAMES: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
}

#[inline(always)]
fn slot_of(class: Fingerprint, path: Fingerprint) -> usize {
    ((class.mix() ^ path.mix().rotate_left(32)) >> 58) as usize % SLOTS
}

/// Whether (class, path) is long enough to need [`LONG_NAMES`].
#[inline(always)]
fn is_long(class: Fingerprint, path: Fingerprint) -> bool {
    class.len > SHORT || path.len > SHORT
}

/// The targets remembered for (class, path) on `engine` at `generation`.
/// Inlined into each caller: out of line, a hit costs a third more.
#[inline(always)]
pub(super) fn lookup(engine: u64, generation: u64, class: &str, path: &str) -> Option<TargetBuf> {
    let (class_print, path_print) = (Fingerprint::of(class), Fingerprint::of(path));
    let at = slot_of(class_print, path_print);
    let wanted = Key {
        engine,
        generation,
        class: class_print,
        path: path_print,
    };
    if KEYS.try_with(|keys| keys[at].get()).ok()? != wanted {
        return None;
    }
    if is_long(class_print, path_print) && !long_names_match(at, class, path) {
        return None;
    }
    TARGETS.try_with(|targets| targets[at].get()).ok()
}

/// Whether slot `at`'s full names are (class, path).
#[cold]
fn long_names_match(at: usize, class: &str, path: &str) -> bool {
    LONG_NAMES
        .try_with(|names| {
            names
                .try_borrow()
                .ok()
                .and_then(|names| names.get(at).map(|(c, p)| c == class && p == path))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// Remembers the targets of (class, path) on `engine`, resolved at `generation`.
pub(super) fn remember(engine: u64, generation: u64, class: &str, path: &str, targets: TargetBuf) {
    let (class_print, path_print) = (Fingerprint::of(class), Fingerprint::of(path));
    let at = slot_of(class_print, path_print);
    // The slot is emptied first, so that it never pairs the fingerprints
    // and targets of one name with the full names of another.
    // Without thread-local storage (a thread being torn down) nothing is remembered.
    if KEYS.try_with(|keys| keys[at].set(EMPTY)).is_err() {
        return;
    }
    if is_long(class_print, path_print) {
        let kept = LONG_NAMES.try_with(|names| {
            let Ok(mut names) = names.try_borrow_mut() else {
                return false;
            };
            if names.is_empty() {
                names.resize_with(SLOTS, Default::default);
            }
            let (c, p) = &mut names[at];
            c.clear();
            c.push_str(class);
            p.clear();
            p.push_str(path);
            true
        });
        if kept != Ok(true) {
            return;
        }
    }
    if TARGETS.try_with(|slots| slots[at].set(targets)).is_ok() {
        let key = Key {
            engine,
            generation,
            class: class_print,
            path: path_print,
        };
        let _ = KEYS.try_with(|keys| keys[at].set(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(ids: &[u32]) -> TargetBuf {
        TargetBuf::copy_of(ids)
    }

    #[test]
    fn a_remembered_name_is_used_only_for_its_engine_and_generation() {
        remember(1, 5, "c", "/a", targets(&[3, 0]));
        let found = lookup(1, 5, "c", "/a").expect("remembered");
        assert_eq!(found.as_slice(), [3, 0]);
        assert!(lookup(1, 6, "c", "/a").is_none(), "another generation");
        assert!(lookup(2, 5, "c", "/a").is_none(), "another engine");
        assert!(lookup(1, 5, "c", "/b").is_none(), "another path");
        assert!(lookup(1, 5, "d", "/a").is_none(), "another class");
        // Taking the slot over forgets the old name.
        remember(1, 6, "c", "/a", targets(&[4, 0]));
        assert!(lookup(1, 5, "c", "/a").is_none());
        assert_eq!(lookup(1, 6, "c", "/a").unwrap().as_slice(), [4, 0]);
    }

    #[test]
    fn each_thread_has_its_own_memo() {
        remember(9, 1, "c", "/x", targets(&[1]));
        let elsewhere = std::thread::spawn(|| lookup(9, 1, "c", "/x").is_some())
            .join()
            .unwrap();
        assert!(!elsewhere);
        assert!(lookup(9, 1, "c", "/x").is_some());
    }

    #[test]
    fn long_names_that_differ_between_their_end_words_are_told_apart() {
        // 17 bytes: byte 8 is in neither the head word (0..8) nor the tail (9..17).
        let (first, second) = ("aaaaaaaaXaaaaaaaa", "aaaaaaaaYaaaaaaaa");
        assert!(Fingerprint::of(first) == Fingerprint::of(second));
        remember(3, 1, first, "/p", targets(&[1]));
        assert!(lookup(3, 1, second, "/p").is_none());
        assert!(lookup(3, 1, "c", first).is_none());
        remember(3, 1, "c", first, targets(&[2]));
        assert!(lookup(3, 1, "c", second).is_none());
        assert_eq!(lookup(3, 1, "c", first).unwrap().as_slice(), [2]);
    }

    #[test]
    fn short_names_have_equal_fingerprints_only_when_equal() {
        let names: Vec<String> = (0..=SHORT)
            .flat_map(|len| {
                (0..len.max(1)).flat_map(move |at| {
                    [b'a', b'b', 0].map(|byte| {
                        let mut name = vec![b'a'; len];
                        if at < len {
                            name[at] = byte;
                        }
                        String::from_utf8(name).unwrap()
                    })
                })
            })
            .collect();
        for a in &names {
            for b in &names {
                assert_eq!(
                    Fingerprint::of(a) == Fingerprint::of(b),
                    a == b,
                    "{a:?} {b:?}"
                );
            }
        }
    }
}
