//! Property tests of the sealed-record barrier (`authenta_keyd::store::barrier`) and the record
//! codec inside it: sealed rows open to their plaintext only at their own table and row and
//! under their own key, any single bit flip is detected, data keys unwrap only under their
//! master, and records round trip and refuse trailing bytes. The `sealed_row` fuzz target
//! goes deeper; these run in every `cargo test` and stay fast (128 cases each; raise with
//! `PROPTEST_CASES=N`).

mod common;

use authenta_keyd::key::{Grace, KeyRecord, Permissions, UsageRecord};
use authenta_keyd::store::barrier::{unwrap_data_key, wrap_data_key, Barrier, Tampered};
use authenta_keyd::store::record_codec;
use common::strategies::{cases, opt_text, permissions, text};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;
use zeroize::Zeroizing;

/// Table names as the store uses them (fixed identifiers). They never hold a NUL byte: the
/// associated data is `table ‖ 0 ‖ row`, which is only unambiguous under that condition.
fn table() -> impl Strategy<Value = String> {
    "[a-z_]{1,12}"
}

/// Row ids: key ids, hex hashes, sequence numbers — and here any text without a NUL.
fn row() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,32}"
}

fn key_bytes() -> impl Strategy<Value = Zeroizing<[u8; 32]>> {
    any::<[u8; 32]>().prop_map(Zeroizing::new)
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn sealed_rows_open_to_their_plaintext(
        key in key_bytes(),
        table in table(),
        row in row(),
        plaintext in vec(any::<u8>(), 0..512),
    ) {
        let barrier = Barrier::new(&key);
        let sealed = barrier.seal(&table, &row, &plaintext);
        prop_assert_eq!(barrier.open(&table, &row, &sealed), Ok(plaintext.clone()));
        // The plaintext does not appear in the sealed bytes (beyond chance for tiny inputs).
        if plaintext.len() >= 16 {
            prop_assert!(!sealed.windows(plaintext.len()).any(|w| w == plaintext.as_slice()));
        }
    }

    #[test]
    fn any_single_bit_flip_is_detected(
        key in key_bytes(),
        table in table(),
        row in row(),
        plaintext in vec(any::<u8>(), 0..256),
        bit in any::<Index>(),
    ) {
        let barrier = Barrier::new(&key);
        let mut sealed = barrier.seal(&table, &row, &plaintext);
        let bit = bit.index(sealed.len() * 8);
        sealed[bit / 8] ^= 1 << (bit % 8);
        prop_assert_eq!(barrier.open(&table, &row, &sealed), Err(Tampered));
    }

    #[test]
    fn a_row_does_not_open_elsewhere_or_under_another_key(
        key in key_bytes(),
        other_key in key_bytes(),
        (table, other_table) in (table(), table()),
        (row, other_row) in (row(), row()),
        plaintext in vec(any::<u8>(), 0..64),
    ) {
        let barrier = Barrier::new(&key);
        let sealed = barrier.seal(&table, &row, &plaintext);
        if (&table, &row) != (&other_table, &other_row) {
            prop_assert_eq!(barrier.open(&other_table, &other_row, &sealed), Err(Tampered));
        }
        if *key != *other_key {
            prop_assert_eq!(Barrier::new(&other_key).open(&table, &row, &sealed), Err(Tampered));
        }
    }

    #[test]
    fn arbitrary_bytes_do_not_open(
        key in key_bytes(),
        table in table(),
        row in row(),
        bytes in vec(any::<u8>(), 0..128),
    ) {
        prop_assert_eq!(Barrier::new(&key).open(&table, &row, &bytes), Err(Tampered));
        prop_assert!(unwrap_data_key(&key, &bytes).is_err());
    }

    #[test]
    fn data_keys_unwrap_only_under_their_master(
        master in key_bytes(),
        other in key_bytes(),
        data in key_bytes(),
    ) {
        let wrapped = wrap_data_key(&master, &data);
        prop_assert_eq!(*unwrap_data_key(&master, &wrapped).expect("opens"), *data);
        if *master != *other {
            prop_assert!(unwrap_data_key(&other, &wrapped).is_err());
        }
    }

    #[test]
    fn key_records_round_trip_and_refuse_trailing_bytes(
        record in key_record(),
        usage in usage_record(),
        extra in any::<u8>(),
    ) {
        let bytes = record_codec::to_bytes(&record);
        prop_assert_eq!(record_codec::from_bytes::<KeyRecord>(&bytes), Some(record));
        let mut longer = bytes;
        longer.push(extra);
        prop_assert_eq!(record_codec::from_bytes::<KeyRecord>(&longer), None);

        let bytes = record_codec::to_bytes(&usage);
        prop_assert_eq!(record_codec::from_bytes::<UsageRecord>(&bytes), Some(usage));
        let mut longer = bytes;
        longer.push(extra);
        prop_assert_eq!(record_codec::from_bytes::<UsageRecord>(&longer), None);
    }

    #[test]
    fn record_decoding_never_panics(bytes in vec(any::<u8>(), 0..256)) {
        if let Some(record) = record_codec::from_bytes::<KeyRecord>(&bytes) {
            prop_assert_eq!(record_codec::from_bytes(&record_codec::to_bytes(&record)), Some(record));
        }
        if let Some(usage) = record_codec::from_bytes::<UsageRecord>(&bytes) {
            prop_assert_eq!(record_codec::from_bytes(&record_codec::to_bytes(&usage)), Some(usage));
        }
    }
}

fn key_record() -> impl Strategy<Value = KeyRecord> {
    let strings = (
        text(),
        any::<[u8; 32]>(),
        text(),
        text(),
        permissions(),
        opt_text(),
    );
    let times = (
        any::<i64>(),
        option::of(any::<i64>()),
        option::of(any::<i64>()),
        option::of(any::<i64>()),
        opt_text(),
        option::of((any::<[u8; 32]>(), any::<i64>())),
    );
    (strings, times).prop_map(
        |(
            (id, token_hash, name, start, permissions, environment),
            (created_at, rotated_at, expires_at, revoked_at, revoke_reason, grace),
        )| KeyRecord {
            id,
            token_hash,
            name,
            start,
            permissions: Permissions::from_list(&permissions),
            environment,
            created_at,
            rotated_at,
            expires_at,
            revoked_at,
            revoke_reason,
            grace: grace.map(|(token_hash, until)| Grace { token_hash, until }),
            details: Default::default(),
        },
    )
}

fn usage_record() -> impl Strategy<Value = UsageRecord> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        option::of(any::<i64>()),
    )
        .prop_map(
            |(verifications, allowed, denied, last_used_at)| UsageRecord {
                verifications,
                allowed,
                denied,
                last_used_at,
                limits: Default::default(),
            },
        )
}
