//! JSON from outside the host, parsed strictly: an object may not hold the
//! same key twice.
//!
//! RFC 8259 leaves an object with duplicate names undefined, and parsers
//! disagree on it: serde_json keeps the last, others keep the first or
//! fail. A document Plait stores and passes on (a step's output, a run's
//! input, an API body) must mean one thing to every reader, so a duplicate
//! key is refused with the key and where it is (`.items[2]`), never
//! resolved silently.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

/// `text` as JSON, refused when it is not JSON or an object in it holds a
/// key twice (the error names the key and its object's path).
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_json::Error> {
    from_slice(text.as_bytes())
}

/// [`from_str`] of bytes.
pub fn from_slice<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    check(bytes)?;
    serde_json::from_slice(bytes)
}

/// Refuses `bytes` when it is not JSON or an object in it holds a key
/// twice: the error says ``duplicate key `a` in the object at `.x[0]` ``,
/// with the line and column.
pub fn check(bytes: &[u8]) -> Result<(), serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    Unique(&Path::Root).deserialize(&mut deserializer)?;
    deserializer.end()
}

/// Where a value is, built only when an error needs it.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn write(path: &Path<'_>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match path {
                Path::Root => Ok(()),
                Path::Key(parent, key) => {
                    write(parent, f)?;
                    let plain = !key.is_empty()
                        && !key.starts_with(|c: char| c.is_ascii_digit())
                        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if plain {
                        write!(f, ".{key}")
                    } else {
                        write!(f, "[{}]", serde_json::Value::from(*key))
                    }
                }
                Path::Index(parent, index) => {
                    write(parent, f)?;
                    write!(f, "[{index}]")
                }
            }
        }
        match self {
            Path::Root => f.write_str("."),
            path => write(path, f),
        }
    }
}

/// Visits a value, checking every object in it; keeps nothing.
struct Unique<'a>(&'a Path<'a>);

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i128<E>(self, _: i128) -> Result<(), E> {
        Ok(())
    }
    fn visit_u128<E>(self, _: u128) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while seq
            .next_element_seed(Unique(&Path::Index(self.0, index)))?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let key = key.into_owned();
            if seen.contains(&key) {
                return Err(A::Error::custom(format!(
                    "duplicate key `{key}` in the object at `{}`: an object's keys must be unique",
                    self.0
                )));
            }
            map.next_value_seed(Unique(&Path::Key(self.0, &key)))?;
            seen.insert(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn a_duplicate_key_is_refused_with_its_path() {
        let error = from_str::<Value>(r#"{"a":1,"a":2}"#).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("duplicate key `a` in the object at `.`"),
            "{error}"
        );
        let error = from_str::<Value>(r#"{"x":[{}, {"ok":1,"y z":{"k":1,"k":1}}]}"#).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("duplicate key `k` in the object at `.x[1][\"y z\"]`"),
            "{error}"
        );
        // Escaped spellings of one key are one key.
        assert!(from_str::<Value>(r#"{"a":1,"\u0061":2}"#).is_err());
    }

    #[test]
    fn valid_json_parses_as_serde_json_would() {
        let text = r#"{"a":{"a":1},"b":[{"a":1},{"a":2}],"n":-1.5e3,"big":18446744073709551615}"#;
        assert_eq!(
            from_str::<Value>(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert!(from_str::<Value>("{not json").is_err());
        assert!(from_str::<Value>("{} trailing").is_err());
    }
}
