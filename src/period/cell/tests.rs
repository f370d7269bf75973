use super::bucket::BucketSpot;
use super::encoding::CellRef;
use super::packed::shape;
use super::*;
use crate::period::Retention;

const NOV_27_2026: i64 = 1_795_737_600; // 2026-11-27T00:00:00Z
const DAY: i64 = 86_400;

fn amount(count: i64, value: i64) -> Amount {
    Amount { count, value }
}

fn at(secs: i64, days: u32) -> EventTime {
    let horizon = Retention { months: 24, days }.horizon(NOV_27_2026);
    EventTime::new(secs, horizon)
}

#[test]
fn a_fresh_cell_keeps_its_buckets_packed_newest_first() {
    let mut cell = Cell::new(0, amount(1, 2), &at(NOV_27_2026, 90));
    assert!(matches!(cell.buckets, Buckets::Packed(p) if p.shape() == shape::MONTH_DAY));
    let spot = cell.plan(amount(1, 2), &at(NOV_27_2026 + 5, 90)).unwrap();
    assert_eq!(
        spot,
        CellSpot {
            month: BucketSpot::At(0),
            day: BucketSpot::At(1)
        }
    );
    cell.commit(spot, amount(1, 2), &at(NOV_27_2026 + 5, 90));
    // The day before: a third bucket moves them to the heap, in order.
    cell.add(amount(1, 0), &at(NOV_27_2026 - DAY, 90));
    assert!(matches!(cell.buckets, Buckets::Heap(_)));
    assert!(cell.is_well_formed());
    let keys: Vec<String> = cell
        .periods(at(NOV_27_2026, 90).horizon)
        .map(|r| r.period.to_string())
        .collect();
    assert_eq!(keys, ["total", "2611", "261127", "261126"]);
    assert_eq!(cell.total, amount(3, 4));
}

#[test]
fn a_new_cell_is_an_empty_one_incremented() {
    let horizon = |days| Retention { months: 2, days }.horizon(NOV_27_2026);
    let times = [
        // This month and today, both kept.
        EventTime::new(NOV_27_2026 + 5, horizon(7)),
        // Ten days ago: its day is out of a 7-day retention, its month kept.
        EventTime::new(NOV_27_2026 - 10 * DAY, horizon(7)),
        // Its day kept (90 days), its month out of a 2-month retention.
        EventTime::new(NOV_27_2026 - 70 * DAY, horizon(90)),
        // A year ago: both out.
        EventTime::new(NOV_27_2026 - 365 * DAY, horizon(90)),
    ];
    for at in &times {
        let mut added = Cell::default().of_counter(3);
        added.add(amount(2, -7), at);
        assert_eq!(Cell::new(3, amount(2, -7), at), added, "{at:?}");
        assert!(Cell::new(3, amount(2, -7), at).is_well_formed());
    }
    let kept = |at: &EventTime| Cell::new(0, amount(1, 0), at).periods(at.horizon).count();
    assert_eq!(times.iter().map(kept).collect::<Vec<_>>(), [3, 2, 2, 1]);
}

#[test]
fn packed_shapes_unpack_to_the_buckets_they_were_packed_from() {
    let month = |key: u32, secs: i64| Bucket {
        key: key | MONTH_TAG,
        last_updated: secs as u32,
        amount: amount(secs, -secs),
    };
    let day = |secs: i64| Bucket {
        key: DayKey::of(secs).0,
        last_updated: secs as u32,
        amount: amount(7, secs),
    };
    // 2026-10-01 and 2026-10-31, 00:00:00Z: a 31-day month's ends.
    let (first, last) = (NOV_27_2026 - 57 * DAY, NOV_27_2026 - 27 * DAY);
    let october = MonthKey::of(first).0;
    let packable: Vec<Vec<Bucket>> = vec![
        vec![],
        vec![month(october, first)],
        vec![day(last + DAY - 1)],
        vec![month(october, first), day(first)],
        // The month's latest event 30 days before or after the day's.
        vec![month(october, first), day(last + DAY - 1)],
        vec![month(october, last + DAY - 1), day(first)],
    ];
    for buckets in packable {
        let packed = Packed::pack(&buckets).expect("a packed shape");
        let (unpacked, len) = packed.unpack();
        assert_eq!(&unpacked[..len], &buckets[..]);
        let as_buckets = Buckets::from_vec(buckets.clone());
        assert!(matches!(as_buckets, Buckets::Packed(_)));
        assert_eq!(*as_buckets.view(), buckets[..]);
    }
    let november = MonthKey::of(NOV_27_2026).0;
    let unpackable: Vec<Vec<Bucket>> = vec![
        // Two months; a day of another month; two days; three buckets.
        vec![month(november, NOV_27_2026), month(october, first)],
        vec![month(november, NOV_27_2026), day(last)],
        vec![day(last), day(first)],
        vec![month(october, last), day(last), day(first)],
    ];
    for buckets in unpackable {
        assert!(Packed::pack(&buckets).is_none());
        let as_buckets = Buckets::from_vec(buckets.clone());
        assert!(matches!(as_buckets, Buckets::Heap(_)));
        assert_eq!(*as_buckets.view(), buckets[..]);
    }
}

#[test]
fn an_increment_of_a_packed_cell_equals_the_same_on_the_heap() {
    // Every second of a day, and the seconds around it, in a spread.
    for step in 0..200 {
        let secs = NOV_27_2026 + (step * 7_919) % (3 * DAY) - DAY;
        let first = at(NOV_27_2026 + 3_600, 90);
        let mut packed = Cell::new(1, amount(1, 1), &first);
        let mut heap = packed.clone();
        heap.buckets = Buckets::Heap(heap.buckets.view().to_vec());
        let later = at(secs, 90);
        for cell in [&mut packed, &mut heap] {
            cell.plan(amount(2, -3), &later).expect("no overflow");
            cell.add(amount(2, -3), &later);
        }
        assert_eq!(packed, heap, "{secs}");
        let periods = |cell: &Cell| -> Vec<(String, i64, i64)> {
            cell.periods(later.horizon)
                .map(|r| (r.period.to_string(), r.amount.count, r.last_updated))
                .collect()
        };
        assert_eq!(periods(&packed), periods(&heap));
        assert!(packed.is_well_formed());
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::with_cases(4096)
    })]

    /// Whatever the order of events over two months, packed or not, a
    /// cell reads back each period's sum and latest event time. Each
    /// event comes on a later (or the same) day than the one before,
    /// so that with a 7-day retention a backfilled event can be a
    /// month's latest while its day is not kept: a packed month and day
    /// with different `lastUpdated` values.
    #[test]
    fn every_period_reads_back_its_sum_and_latest_event(
        mut events in proptest::collection::vec(
            (0i64..20, 0i64..30, 0i64..DAY, -5i64..5),
            1..6,
        ),
        days in proptest::prop_oneof![proptest::strategy::Just(7u32), proptest::strategy::Just(90)],
    ) {
        use std::collections::BTreeMap;
        let horizon = |now: i64| Retention { months: 24, days }.horizon(now);
        // Days before 27 November that each event is made on, latest last.
        events.sort_by_key(|event| std::cmp::Reverse(event.0));
        let now = EventTime::new(NOV_27_2026, horizon(NOV_27_2026));
        let mut cell = Cell::default();
        let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for &(made_before, days_ago, secs, count) in &events {
            let made = NOV_27_2026 - made_before * DAY;
            let when = made - days_ago * DAY + secs;
            let event = EventTime::new(when, horizon(made));
            cell.plan(amount(count, 1), &event).expect("no overflow");
            cell.add(amount(count, 1), &event);
            let mut keys = vec!["total".to_owned(), MonthKey::of(when).to_string()];
            if DayKey::of(when) >= now.horizon.1 {
                keys.push(DayKey::of(when).to_string());
            }
            for key in keys {
                let (sum, latest) = expected.entry(key).or_insert((0, i64::MIN));
                *sum += count;
                *latest = (*latest).max(when);
            }
            proptest::prop_assert!(cell.is_well_formed());
        }
        let read: BTreeMap<String, (i64, i64)> = cell
            .periods(now.horizon)
            .map(|r| (r.period.to_string(), (r.amount.count, r.last_updated)))
            .collect();
        proptest::prop_assert_eq!(read, expected);
        // And through a snapshot's encoding.
        let mut bytes = Vec::new();
        crate::persist::write_record(&mut bytes, &cell);
        let decoded = crate::persist::decode_record::<Cell>(&bytes).expect("decodes");
        proptest::prop_assert_eq!(decoded.of_counter(cell.counter()), cell);
    }
}

#[test]
fn new_buckets_go_between_existing_ones() {
    let mut cell = Cell::default();
    for day in [0, 4, 2, 6, 1] {
        cell.add(amount(1, 0), &at(NOV_27_2026 - day * DAY, 90));
    }
    cell.add(amount(1, 0), &at(NOV_27_2026 - 40 * DAY, 90));
    assert!(cell.is_well_formed());
    assert_eq!(cell.buckets.view().len(), 2 + 6);
}

#[test]
fn retention_moves_a_cell_back_into_its_packed_word() {
    let mut cell = Cell::default();
    for day in 0..5 {
        cell.add(amount(1, 0), &at(NOV_27_2026 - day * DAY, 90));
    }
    // Two years later, with a 7-day retention, everything old goes.
    let later = NOV_27_2026 + 800 * DAY;
    let horizon = Retention { months: 1, days: 7 }.horizon(later);
    cell.add(amount(1, 0), &EventTime::new(later, horizon));
    assert!(matches!(cell.buckets, Buckets::Packed(p) if p.shape() == shape::MONTH_DAY));
    assert_eq!(cell.total, amount(6, 0));
}

#[test]
fn plan_reports_the_first_overflowing_amount() {
    let now = at(NOV_27_2026, 90);
    let mut cell = Cell::new(0, amount(i64::MAX - 1, 0), &now);
    assert_eq!(cell.plan(amount(2, 0), &now), Err(AmountField::Count));
    assert_eq!(cell.plan(amount(-5, 0), &now).map(drop), Ok(()));
    cell.add(amount(-5, i64::MIN + 1), &now);
    assert_eq!(cell.plan(amount(0, -2), &now), Err(AmountField::Value));
}

#[test]
fn decoding_checks_last_updated() {
    use crate::persist::{decode_record, write_record};
    let cell = Cell::new(0, amount(1, 0), &at(NOV_27_2026, 90));
    let mut bytes = Vec::new();
    write_record(&mut bytes, &cell);
    assert_eq!(decode_record::<Cell>(&bytes).unwrap(), cell);
    let bad = CellRef {
        total: Amount::default(),
        last_updated: END_EVENT_SECS,
        buckets: &[],
    };
    let mut bytes = Vec::new();
    write_record(&mut bytes, &bad);
    let decoded = decode_record::<Cell>(&bytes);
    assert!(decoded.is_err());
}
