use super::*;

#[test]
fn header_round_trips_and_detects_damage() {
    let header = Header::new(SNAPSHOT_MAGIC, 1234, 99);
    let bytes = header.encode();
    assert_eq!(Header::decode(&bytes, SNAPSHOT_MAGIC).unwrap(), header);
    assert!(Header::decode(&bytes, LOG_MAGIC).is_err());
    assert_eq!(
        Header::decode(&bytes[..10], SNAPSHOT_MAGIC),
        Err(FormatError::Truncated)
    );
    for i in 0..HEADER_BYTES {
        let mut bad = bytes;
        bad[i] ^= 0x10;
        assert!(Header::decode(&bad, SNAPSHOT_MAGIC).is_err(), "byte {i}");
    }
}

#[test]
fn frames_round_trip_and_detect_damage() {
    let mut out = Vec::new();
    write_frame(&mut out, &("hello".to_string(), 42u64)).unwrap();
    write_frame(&mut out, &vec![1u32, 2, 3]).unwrap();
    let (payload, used) = read_frame(&out).unwrap();
    assert_eq!(
        decode::<(String, u64)>(payload).unwrap(),
        ("hello".into(), 42)
    );
    let (payload, _) = read_frame(&out[used..]).unwrap();
    assert_eq!(decode::<Vec<u32>>(payload).unwrap(), [1, 2, 3]);
    for cut in 0..used {
        assert!(read_frame(&out[..cut]).is_err(), "cut at {cut}");
    }
    for i in 0..used {
        let mut bad = out.clone();
        bad[i] ^= 0x01;
        assert!(
            read_frame(&bad).is_err() || read_frame(&bad).unwrap().1 != used,
            "flip {i}"
        );
    }
    assert!(!is_torn_tail(&out[1..]));
    assert!(is_torn_tail(&out[1..used]));
}

#[test]
fn hand_encoded_increments_are_bincode_records() {
    use crate::period::Amount;
    use crate::persist::wal::{LogRecord, LoggedEntry, RecordV2Ref, decode_log_frame};
    use crate::store::ResolvedEntry;
    let entries = [
        ResolvedEntry {
            targets: &[70_000, 300, 3, 0],
            amount: Amount {
                count: -2,
                value: i64::MAX,
            },
        },
        ResolvedEntry {
            targets: &[0],
            amount: Amount {
                count: 1,
                value: i64::MIN,
            },
        },
    ];
    let long_uid = "ü".repeat(200);
    for (uid, at_delta) in [
        ("user-ü", 1_795_780_800),
        ("u", -86_400),
        (long_uid.as_str(), 0),
        ("u", i64::MIN),
    ] {
        let mut by_serde = Vec::new();
        write_record(
            &mut by_serde,
            &RecordV2Ref::Increment {
                uid,
                at_delta,
                entries: &entries,
            },
        );
        let mut by_hand = Vec::new();
        write_increment_record(&mut by_hand, uid, at_delta, &entries);
        assert_eq!(by_hand, by_serde, "{uid} {at_delta}");
    }
    // A frame: its first LSN, then records back to back, each taking
    // the next LSN; event times are differences from the previous one.
    let mut frame = Vec::new();
    start_log_frame(&mut frame, 1 << 40);
    write_increment_record(&mut frame, "user-ü", 1_795_780_800, &entries[1..]);
    write_record(&mut frame, &RecordV2Ref::Registry(&[]));
    write_increment_record(&mut frame, "u", -86_400, &entries[..1]);
    seal_frame(&mut frame).unwrap();
    let (payload, used) = read_frame(&frame).unwrap();
    assert_eq!(used, frame.len());
    let decoded = decode_log_frame(FormatVersion::V2, payload).unwrap();
    let logged = |entry: &ResolvedEntry<'_>| LoggedEntry {
        targets: entry.targets.to_vec(),
        amount: entry.amount,
    };
    assert_eq!(
        decoded,
        [
            LogRecord::Increment {
                lsn: 1 << 40,
                uid: "user-ü".into(),
                at: 1_795_780_800,
                entries: vec![logged(&entries[1])],
            },
            LogRecord::Registry(Vec::new()),
            LogRecord::Increment {
                lsn: (1 << 40) + 2,
                uid: "u".into(),
                at: 1_795_780_800 - 86_400,
                entries: vec![logged(&entries[0])],
            },
        ]
    );
    // A payload cut inside a record is not whole records, and a frame
    // needs a record after its first LSN.
    assert!(decode_log_frame(FormatVersion::V2, &payload[..payload.len() - 3]).is_err());
    assert!(decode_log_frame(FormatVersion::V2, &payload[..1]).is_err());
    assert!(decode_log_frame(FormatVersion::V2, &[]).is_err());
    // Version 1 reads the same bytes as records with no first LSN:
    // they do not decode.
    assert!(decode_log_frame(FormatVersion::V1, payload).is_err());
}

#[test]
fn the_worked_example_of_the_format_document() {
    use crate::period::Amount;
    use crate::store::ResolvedEntry;
    let entries = [ResolvedEntry {
        targets: &[0],
        amount: Amount { count: 1, value: 0 },
    }];
    let mut frame = Vec::new();
    start_log_frame(&mut frame, 5);
    write_increment_record(&mut frame, "u2", 1_795_780_800, &entries);
    write_increment_record(&mut frame, "u3", 60, &entries);
    seal_frame(&mut frame).unwrap();
    let hex: Vec<String> = frame.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex.join(" "),
        "19 00 00 00 51 57 49 32 05 02 02 75 32 fc 80 e1 12 d6 01 01 00 02 00 \
         02 02 75 33 78 01 01 00 02 00"
    );
}

#[test]
fn implied_lsns_and_event_times_that_overflow_are_corrupt() {
    use crate::period::Amount;
    use crate::persist::wal::{RecordV2Ref, decode_log_frame};
    use crate::store::ResolvedEntry;
    let entries = [ResolvedEntry {
        targets: &[0],
        amount: Amount { count: 1, value: 0 },
    }];
    let mut lsns = Vec::new();
    start_log_frame(&mut lsns, u64::MAX);
    write_record(&mut lsns, &RecordV2Ref::Registry(&[]));
    write_increment_record(&mut lsns, "u", 1, &entries);
    let mut times = Vec::new();
    start_log_frame(&mut times, 1);
    write_increment_record(&mut times, "u", i64::MAX, &entries);
    write_increment_record(&mut times, "u", 1, &entries);
    for frame in [lsns, times] {
        let payload = &frame[FRAME_OVERHEAD..];
        assert!(matches!(
            decode_log_frame(FormatVersion::V2, payload),
            Err(FormatError::Corrupt(_))
        ));
    }
}

#[test]
fn a_huge_damaged_tail_is_scanned_in_bounded_time() {
    // Every offset claims a ~16 MiB frame; without a budget this scan
    // would checksum terabytes. It gives up and reports corruption.
    let tail = vec![1u8; 0x0101_0101 + FRAME_OVERHEAD + 5000];
    assert!(!is_torn_tail(&tail));
}

#[test]
fn fault_a_a_payload_within_the_budget_decodes_within_the_limit() {
    // The densest claims there are: `u64`s of one byte each, 8 bytes
    // claimed per byte read. A payload of the budget decodes; one of
    // twice the budget (still well under the frame limit) does not,
    // which is why writers keep to the budget.
    let payload_of = |len: usize| {
        let count = len - 5;
        let mut payload = vec![0xFC];
        payload.extend_from_slice(&(count as u32).to_le_bytes());
        payload.resize(len, 0);
        payload
    };
    let within = payload_of(FRAME_BUDGET_BYTES);
    assert_eq!(
        decode::<Vec<u64>>(&within).unwrap().len(),
        FRAME_BUDGET_BYTES - 5
    );
    let twice = payload_of(2 * FRAME_BUDGET_BYTES);
    assert!(matches!(
        decode::<Vec<u64>>(&twice),
        Err(FormatError::Corrupt(_))
    ));
    // And a frame over the budget is never written.
    let mut out = vec![1, 2, 3];
    let too_large = write_frame(&mut out, &vec![0u8; FRAME_BUDGET_BYTES]);
    assert!(matches!(too_large, Err(TooLarge { .. })), "{too_large:?}");
    assert_eq!(out, [1, 2, 3]);
}

#[test]
fn decoding_claims_are_bounded() {
    // A length prefix claiming 2^60 elements must fail, not allocate.
    let mut evil = vec![0xFFu8];
    evil.extend_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(decode::<Vec<u64>>(&evil).is_err());
}
