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

use std::cell::RefCell;
use std::hash::BuildHasher;

use super::TargetBuf;

/// Slots per thread; a name that collides with another merely resolves again.
const SLOTS: usize = 64;

struct Slot {
    engine: u64,
    generation: u64,
    class: String,
    path: String,
    targets: TargetBuf,
}

thread_local! {
    static MEMO: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
}

fn slot_of(class: &str, path: &str) -> usize {
    let hash = foldhash::fast::FixedState::default().hash_one((class, path));
    (hash >> 32) as usize % SLOTS
}

/// The targets remembered for (class, path) on `engine` at `generation`.
pub(super) fn lookup(engine: u64, generation: u64, class: &str, path: &str) -> Option<TargetBuf> {
    let at = slot_of(class, path);
    MEMO.try_with(|memo| {
        let memo = memo.try_borrow().ok()?;
        let slot = memo.get(at)?.as_ref()?;
        (slot.engine == engine
            && slot.generation == generation
            && slot.class == class
            && slot.path == path)
            .then_some(slot.targets)
    })
    .ok()
    .flatten()
}

/// Remembers the targets of (class, path) on `engine`, resolved at `generation`.
pub(super) fn remember(engine: u64, generation: u64, class: &str, path: &str, targets: TargetBuf) {
    let at = slot_of(class, path);
    // Without thread-local storage (a thread being torn down) nothing is remembered.
    let _ = MEMO.try_with(|memo| {
        let Ok(mut memo) = memo.try_borrow_mut() else {
            return;
        };
        if memo.is_empty() {
            memo.resize_with(SLOTS, || None);
        }
        match &mut memo[at] {
            Some(slot) => {
                slot.engine = engine;
                slot.generation = generation;
                slot.class.clear();
                slot.class.push_str(class);
                slot.path.clear();
                slot.path.push_str(path);
                slot.targets = targets;
            }
            empty => {
                *empty = Some(Slot {
                    engine,
                    generation,
                    class: class.to_owned(),
                    path: path.to_owned(),
                    targets,
                });
            }
        }
    });
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
}
