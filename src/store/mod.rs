//! The durable store: an encrypted SQLite file and the one thread that writes it.
//!
//! Owns: the schema and sealed rows ([`database`]), their encoding ([`record_codec`]), the
//! AES-256-GCM barrier ([`barrier`]) and the master key that wraps its data key
//! ([`master_key`], held in [`locked_key`] memory), the hash-chained audit log ([`audit`]),
//! and the writer thread that commits admin changes in groups and then updates the index
//! ([`writer`]), checking that the store's files are still the ones it has open
//! ([`store_files`]). Start-up reads every key row on two threads ([`row_batch`]) and checks the
//! rows against the audit chain on a third ([`row_binding`]), whose plaintext columns a
//! keyed sum in the chain's sealed head vouches for ([`entry_set`]); eight more warm the page
//! cache first ([`warm`]). After a clean stop, start-up reads the sealed index snapshot that
//! stop wrote instead, when it copies the store as it is ([`index_snapshot`]).
//!
//! Never answers a verify and never touches a socket: the index is what verify reads; the
//! store only feeds it, after each commit.

pub mod audit;
pub mod barrier;
pub(crate) mod change;
mod database;
mod entry_set;
pub mod index_snapshot;
pub mod legacy;
pub(crate) mod locked_key;
pub(crate) mod master_key;
pub(crate) mod outcome;
pub mod record_codec;
mod row_batch;
mod row_binding;
mod store_files;
mod warm;
pub(crate) mod writer;

pub use database::{db_path, exists, FleetPosition, KeySink, Lane, Loaded, RowCheck, Store};
pub use warm::warm_page_cache;
