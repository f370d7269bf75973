use super::*;

impl Record for (u64, u32) {
    fn vacant() -> Self {
        (0, 0)
    }
}

/// A record's hash is its first field.
fn hash_of(record: &(u64, u32)) -> u64 {
    record.0
}

fn find(table: &Table<(u64, u32)>, hash: u64, id: u32) -> Option<&(u64, u32)> {
    table
        .find(hash, |record| record.1 == id)
        .map(|at| table.get(at))
}

#[test]
fn records_whose_hash_bits_coincide_stay_apart_through_growth_and_wrapping() {
    let mut table = Table::default();
    // Three hashes, two with the same tag and home slot, one homed at
    // the last slot: long probe runs, wrapping around the end.
    let hashes = [
        7 | 5 << TAG_SHIFT,
        7 | 5 << TAG_SHIFT | 1 << 40,
        u64::from(u32::MAX),
    ];
    for id in 0..1000 {
        table.insert(
            hashes[id as usize % 3],
            (hashes[id as usize % 3], id),
            hash_of,
        );
    }
    assert_eq!(table.control.len(), 1000);
    for id in 0..1000 {
        let hash = hashes[id as usize % 3];
        assert_eq!(find(&table, hash, id), Some(&(hash, id)));
    }
    assert_eq!(find(&table, 8 | 9 << TAG_SHIFT, 0), None);
    assert_eq!(find(&table, hashes[0], 1000), None);
    assert_eq!(table.records().count(), 1000);
    assert!(Table::<(u64, u32)>::default().find(7, |_| true).is_none());
}

#[test]
fn removed_records_leave_the_others_found_and_their_slots_reused() {
    let mut table = Table::default();
    let hash = |id: u32| u64::from(id % 7) << 20 | u64::from(id) << TAG_SHIFT;
    for id in 0..500 {
        table.insert(hash(id), (hash(id), id), hash_of);
    }
    let capacity = table.control.bytes.len();
    // Remove and re-insert, many times over the table's size: removed
    // slots are reused or cleared, and the table does not grow.
    for round in 0..20 {
        for id in (round % 2..500).step_by(2) {
            let at = table.find(hash(id), |r| r.1 == id).expect("filed");
            let (record, marked) = table.remove(at);
            assert_eq!((record, marked), ((hash(id), id), false));
            assert_eq!(find(&table, hash(id), id), None);
        }
        for id in (0..500).filter(|id| id % 2 != round % 2) {
            assert_eq!(find(&table, hash(id), id), Some(&(hash(id), id)));
        }
        for id in (round % 2..500).step_by(2) {
            table.insert(hash(id), (hash(id), id), hash_of);
        }
    }
    assert_eq!(table.control.len(), 500);
    assert_eq!(table.control.bytes.len(), capacity);
    for id in 0..500 {
        assert_eq!(find(&table, hash(id), id), Some(&(hash(id), id)));
    }
}

#[test]
fn marks_move_with_their_records_when_the_table_grows() {
    let mut table = Table::default();
    let hash = |id: u32| u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for id in 0..10 {
        let at = table.insert(hash(id), (hash(id), id), hash_of);
        if id % 3 == 0 {
            table.control.mark(at);
        }
    }
    for id in 10..2000 {
        table.insert(hash(id), (hash(id), id), hash_of);
    }
    let marked: Vec<u32> = table
        .control
        .marked(usize::MAX)
        .into_iter()
        .map(|at| table.get(at).1)
        .collect();
    let mut marked = marked;
    marked.sort();
    assert_eq!(marked, [0, 3, 6, 9]);
    assert_eq!(table.control.marked_count(), 4);
    let at = table.find(hash(3), |r| r.1 == 3).expect("filed");
    assert_eq!(table.remove(at), ((hash(3), 3), true));
    assert_eq!(table.control.marked_count(), 3);
}

#[test]
fn rebuilding_in_place_clears_removed_slots_and_keeps_records_and_marks() {
    let mut table = Table::default();
    let hash = |id: u32| u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let marked = |id: u32| id.is_multiple_of(5);
    let insert = |table: &mut Table<(u64, u32)>, id: u32| {
        let at = table.insert(hash(id), (hash(id), id), hash_of);
        if marked(id) {
            table.control.mark(at);
        }
    };
    for id in 0..330 {
        insert(&mut table, id);
    }
    let capacity = table.control.bytes.len();
    assert!(331 * 4 <= capacity * 3, "{capacity}");
    // Replace one record at a time by a new one, homed elsewhere: the
    // removed slots pile up until the table is rebuilt at its size.
    let (mut cleared, mut removed_before) = (0, 0);
    for id in 330..20_000 {
        let gone = id - 330;
        let at = table.find(hash(gone), |r| r.1 == gone).expect("filed");
        assert_eq!(table.remove(at), ((hash(gone), gone), marked(gone)));
        insert(&mut table, id);
        cleared += usize::from(table.control.removed + 1 < removed_before);
        removed_before = table.control.removed;
    }
    assert!(cleared > 0);
    assert_eq!(table.control.bytes.len(), capacity);
    assert_eq!(table.control.len(), 330);
    let left = 19_670..20_000;
    for id in left.clone() {
        assert_eq!(find(&table, hash(id), id), Some(&(hash(id), id)));
    }
    let mut marks: Vec<u32> = (table.control.marked(usize::MAX).into_iter())
        .map(|at| table.get(at).1)
        .collect();
    marks.sort();
    assert_eq!(marks, left.filter(|&id| marked(id)).collect::<Vec<_>>());
}

#[test]
fn a_reserved_table_files_its_records_without_rebuilding_and_as_full_as_inserts_leave_it() {
    let hash = |id: u32| u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let (mut grown, mut reserved) = (Table::default(), Table::default());
    for id in 0..100 {
        grown.insert(hash(id), (hash(id), id), hash_of);
        reserved.insert(hash(id), (hash(id), id), hash_of);
    }
    reserved.reserve(5000, hash_of);
    let capacity = reserved.control.bytes.len();
    for id in 100..5100 {
        grown.insert(hash(id), (hash(id), id), hash_of);
        reserved.insert(hash(id), (hash(id), id), hash_of);
        assert_eq!(reserved.control.bytes.len(), capacity, "rebuilt at {id}");
    }
    assert_eq!(capacity, grown.control.bytes.len());
    for id in 0..5100 {
        assert_eq!(find(&reserved, hash(id), id), Some(&(hash(id), id)));
    }
    // Room already there: nothing changes.
    let mut small = Table::default();
    small.insert(hash(0), (hash(0), 0), hash_of);
    let capacity = small.control.bytes.len();
    small.reserve(1, hash_of);
    assert_eq!(small.control.bytes.len(), capacity);
}

#[test]
fn tables_stay_between_about_seven_tenths_and_seven_eighths_full() {
    let mut table = Table::default();
    let hash = |id: u32| u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for id in 0..100_000 {
        table.insert(hash(id), (hash(id), id), hash_of);
        let capacity = table.control.bytes.len();
        assert_eq!(capacity % MIN_CAPACITY, 0);
        assert!((id as usize + 1) * 8 <= capacity * 7);
        if id > 1000 {
            assert!(
                (id as usize + 1) * 100 >= capacity * 69,
                "{id} in {capacity}"
            );
        }
    }
}
