//! What a batch of several entries carries to each distinct cell it
//! reaches: on the stack up to [`CARRIED_ON_STACK`] cells, on the heap
//! beyond, so that a batch applied in place locates each cell once.

use std::collections::HashMap;

use crate::counter::CounterId;
use crate::period::{Amount, Projection};

/// The most distinct cells a batch carries on the stack
/// ([`CarriedCells`]); a batch reaching more moves them to the heap.
pub(super) const CARRIED_ON_STACK: usize = 16;

/// What a batch carries to one of its cells: the counter, the cell's
/// index if the subject has it, its amounts with the batch's additions so
/// far, and their sum.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Carried {
    pub(super) counter: CounterId,
    pub(super) cell: Option<usize>,
    pub(super) projection: Projection,
    pub(super) sum: Amount,
}

/// The distinct cells a batch reaches, in the order it first reaches them:
/// up to [`CARRIED_ON_STACK`] on the stack, searched in turn; beyond, on
/// the heap, found through a map from counter to place.
#[derive(Default)]
pub(super) struct CarriedCells {
    on_stack: [Carried; CARRIED_ON_STACK],
    len: usize,
    on_heap: Vec<Carried>,
    place_of: HashMap<CounterId, usize>,
}

impl CarriedCells {
    pub(super) fn as_slice(&self) -> &[Carried] {
        if self.on_heap.is_empty() {
            &self.on_stack[..self.len]
        } else {
            &self.on_heap
        }
    }

    /// What the batch carries to the cell of `counter`, starting from
    /// `first()` (its index and amounts) if the batch has not reached it before.
    pub(super) fn of(
        &mut self,
        counter: CounterId,
        first: impl FnOnce() -> (Option<usize>, Projection),
    ) -> &mut Carried {
        let known = if self.on_heap.is_empty() {
            self.on_stack[..self.len]
                .iter()
                .position(|c| c.counter == counter)
        } else {
            self.place_of.get(&counter).copied()
        };
        let place = known.unwrap_or_else(|| {
            let (cell, projection) = first();
            let new = Carried {
                counter,
                cell,
                projection,
                sum: Amount::default(),
            };
            if self.on_heap.is_empty() && self.len < CARRIED_ON_STACK {
                self.on_stack[self.len] = new;
                self.len += 1;
                return self.len - 1;
            }
            if self.on_heap.is_empty() {
                self.on_heap.extend_from_slice(&self.on_stack);
                for (place, carried) in self.on_heap.iter().enumerate() {
                    self.place_of.insert(carried.counter, place);
                }
            }
            self.place_of.insert(counter, self.on_heap.len());
            self.on_heap.push(new);
            self.on_heap.len() - 1
        });
        if self.on_heap.is_empty() {
            &mut self.on_stack[place]
        } else {
            &mut self.on_heap[place]
        }
    }
}
