//! What the store reads back from disk: sealed rows and the records inside them.
//!
//! A corrupt or tampered database file must make a row fail closed, never crash the daemon.
//! The input is tried as a sealed value of each table the store opens (under a fixed data
//! key), as the wrapped data key (under a fixed master key), and directly as each record's
//! plaintext encoding. Forging AES-GCM is out of reach, so the sealed paths get past the tag
//! only for the seed corpus (rows sealed under these keys by `tests/fuzz_seeds.rs`); the
//! record decoders are where the fuzzer does its work. Whatever decodes must re-encode to
//! bytes that decode to the same record.
#![no_main]

use authenta_keyd::store::audit::{AuditRecord, ChainHead};
use authenta_keyd::store::barrier::{unwrap_data_key, Barrier};
use authenta_keyd::key::{KeyRecord, OwnerRecord, UsageRecord};
use authenta_keyd::store::legacy;
use authenta_keyd::store::record_codec::{from_bytes, to_bytes};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::sync::OnceLock;
use zeroize::Zeroizing;

/// Must match `FUZZ_DATA_KEY` in `tests/fuzz_seeds.rs`, which seals the seed rows.
const DATA_KEY: [u8; 32] = *b"authenta-keyd fuzz data key 0001";
/// Must match `FUZZ_MASTER_KEY` in `tests/fuzz_seeds.rs`.
const MASTER_KEY: [u8; 32] = *b"authenta-keyd fuzz master key 01";
/// The row the seed key record and usage are sealed for.
const KEY_ID: &str = "key_fuzzseed00000001";

fn barrier() -> &'static Barrier {
    static BARRIER: OnceLock<Barrier> = OnceLock::new();
    BARRIER.get_or_init(|| Barrier::new(&Zeroizing::new(DATA_KEY)))
}

/// Decodes a record; what decodes must survive a round trip.
fn check<T>(plain: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    if let Some(record) = from_bytes::<T>(plain) {
        let bytes = to_bytes(&record);
        assert!(bytes.len() <= plain.len(), "re-encoding grew");
        assert_eq!(from_bytes::<T>(&bytes), Some(record));
    }
}

fuzz_target!(|data: &[u8]| {
    let barrier = barrier();
    if let Ok(plain) = barrier.open("keys", KEY_ID, data) {
        check::<KeyRecord>(&plain);
    }
    if let Ok(plain) = barrier.open("usage", KEY_ID, data) {
        check::<UsageRecord>(&plain);
    }
    if let Ok(plain) = barrier.open("audit", "1", data) {
        check::<AuditRecord>(&plain);
    }
    if let Ok(plain) = barrier.open("meta", "audit_head", data) {
        check::<ChainHead>(&plain);
    }
    if let Ok(key) = unwrap_data_key(&Zeroizing::new(MASTER_KEY), data) {
        assert_eq!(key.len(), 32);
    }
    check::<KeyRecord>(data);
    check::<UsageRecord>(data);
    check::<OwnerRecord>(data);
    // Rows and fleet changes written by version 0.1 are read through their old forms.
    let _ = legacy::key_record(data);
    let _ = legacy::usage_record(data);
    let _ = legacy::change_set(data);
    check::<AuditRecord>(data);
    check::<ChainHead>(data);
});
