//! How records are keyed and encoded in sled's trees: zero-padded
//! indexes, so a prefix scan returns steps and attempts in order, and JSON.

use super::*;

pub(super) fn step_key(run_id: &str, index: u32) -> String {
    format!("{run_id}/{index:08}")
}

pub(super) fn logs_key(run_id: &str, index: u32, item: Option<u32>, attempt: u32) -> String {
    match item {
        None => format!("{run_id}/{index:08}/{attempt:08}"),
        Some(item) => format!("{run_id}/{index:08}/item{item:08}/{attempt:08}"),
    }
}

pub(super) fn signal_key(run_id: &str, step_id: &str) -> String {
    format!("{run_id}/{step_id}")
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Records are plain data (strings, numbers, JSON values); serializing
    // them cannot fail.
    serde_json::to_vec(value).expect("journal records serialize to JSON")
}

pub(super) fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}
