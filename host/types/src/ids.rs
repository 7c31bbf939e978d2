//! Run ids: a type of their own, so a run id cannot be passed where a step
//! name, an idempotency key or a digest is meant.
//!
//! On the wire and in the journal a run id is the same string as before
//! (`#[serde(transparent)]`); in code it derefs to `str`, so reading one
//! costs nothing and the store's lookups take `&str` as they always have.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

/// The id of one run: a UUIDv7 in its hyphenated form when Plait made it,
/// so ids sort by creation time.
///
/// An id read back from the journal or a request is taken as written: runs
/// made by older hosts keep theirs, and a lookup of an id that does not
/// exist is the store's "no such run", not a parse error.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// A new id: a UUIDv7, so later runs sort after earlier ones.
    pub fn new_v7() -> RunId {
        RunId(uuid::Uuid::now_v7().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl Deref for RunId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for RunId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for RunId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for RunId {
    fn from(id: String) -> RunId {
        RunId(id)
    }
}

impl From<&RunId> for RunId {
    fn from(id: &RunId) -> RunId {
        id.clone()
    }
}

impl From<&str> for RunId {
    fn from(id: &str) -> RunId {
        RunId(id.to_owned())
    }
}

impl From<RunId> for String {
    fn from(id: RunId) -> String {
        id.0
    }
}

impl PartialEq<str> for RunId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for RunId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for RunId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<RunId> for str {
    fn eq(&self, other: &RunId) -> bool {
        self == other.0
    }
}

impl PartialEq<RunId> for &str {
    fn eq(&self, other: &RunId) -> bool {
        *self == other.0
    }
}

impl PartialEq<RunId> for String {
    fn eq(&self, other: &RunId) -> bool {
        *self == other.0
    }
}

#[cfg(test)]
mod tests {
    use super::RunId;

    #[test]
    fn new_ids_are_uuids_that_sort_by_creation() {
        let first = RunId::new_v7();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = RunId::new_v7();
        assert_eq!(first.len(), 36, "{first}");
        assert!(first < second, "{first} !< {second}");
        assert_ne!(first, second);
    }

    #[test]
    fn the_wire_form_is_the_bare_string() {
        let id = RunId::from("0190a2b4-0000-7000-8000-000000000000");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"0190a2b4-0000-7000-8000-000000000000\"");
        let back: RunId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        assert_eq!(back, "0190a2b4-0000-7000-8000-000000000000");
    }
}
