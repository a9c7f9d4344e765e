//! The policy parser: operators (and whatever writes their ConfigMaps) hand it arbitrary
//! text. It must never panic, and any error it gives must be one line (it goes to logs and
//! `policy status`). What parses must give sane times for any key.
#![no_main]

use authenta_keyd::key::{KeyRecord, Permissions};
use authenta_keyd::policy::parse::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(policy) => {
            let key = KeyRecord {
                id: "key_0123456789abcdef".into(),
                token_hash: [0; 32],
                name: "Backend-Server-Key".into(),
                start: "AbCdEf12".into(),
                permissions: Permissions::default(),
                environment: Some("production".into()),
                created_at: 1_764_000_000_000,
                rotated_at: None,
                expires_at: None,
                revoked_at: None,
                revoke_reason: None,
                grace: None, details: Default::default(), };
            let times = policy.times(&key);
            if let (Some(warn), Some(by)) = (times.warn_from, times.rotate_by) {
                assert!(warn <= by);
            }
        }
        Err(message) => assert!(!message.contains('\n'), "one-line errors: {message:?}"),
    }
});
