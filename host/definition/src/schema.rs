//! JSON Schema checks of workflow inputs and of step inputs and outputs.
//!
//! A workflow's `input.schema` is checked before a run is created; the
//! schemas a component declares in `describe()` are checked on each call,
//! the input before the step runs and the output before it is stored. A
//! violation names the place in the document (a JSON pointer) and the rule.
//! Remote `$ref`s are never fetched: a schema must not make the host reach
//! the network.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// At most this many violations are reported for one document.
const MAX_VIOLATIONS: usize = 8;

/// A compiled JSON Schema.
#[derive(Clone)]
pub struct Schema {
    validator: Arc<jsonschema::Validator>,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Schema")
    }
}

/// One way a document breaks a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where, as a JSON pointer (`/customer/email`); empty for the root.
    pub path: String,
    /// The schema keyword broken (`required`, `type`, `minimum`, ...).
    pub rule: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "at `{path}`: {} (rule `{}`)", self.message, self.rule)
    }
}

/// Every violation found (up to a few), as one message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Violations(pub Vec<Violation>);

/// Why a schema does not compile: the first rule of the JSON Schema
/// meta-schema it breaks, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("at `{path}`: ") })]
pub struct SchemaError {
    /// Where in the schema, as a JSON pointer (`/required`); empty for the
    /// root.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl Schema {
    /// Compiles `schema`.
    ///
    /// # Errors
    /// The schema itself is invalid, or refers to a remote document.
    pub fn compile(schema: &Value) -> Result<Schema, SchemaError> {
        jsonschema::validator_for(schema)
            .map(|validator| Schema {
                validator: Arc::new(validator),
            })
            .map_err(|error| SchemaError {
                path: error.instance_path().to_string(),
                message: error.to_string(),
            })
    }

    /// Checks `value`.
    ///
    /// # Errors
    /// The violations found.
    pub fn check(&self, value: &Value) -> Result<(), Violations> {
        let violations: Vec<Violation> = self
            .validator
            .iter_errors(value)
            .take(MAX_VIOLATIONS)
            .map(|error| Violation {
                path: error.instance_path().to_string(),
                rule: error.kind().keyword().to_owned(),
                message: error.to_string(),
            })
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Violations(violations))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_the_path_and_the_rule() {
        let schema = Schema::compile(&json!({
            "type": "object",
            "required": ["name"],
            "properties": {"age": {"type": "integer", "minimum": 0}}
        }))
        .unwrap();
        assert_eq!(schema.check(&json!({"name": "a", "age": 3})), Ok(()));
        let error = schema.check(&json!({"age": -1})).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("rule `required`"), "{text}");
        assert!(text.contains("at `/age`"), "{text}");
        assert!(text.contains("rule `minimum`"), "{text}");
    }

    #[test]
    fn invalid_and_remote_schemas_do_not_compile() {
        assert!(Schema::compile(&json!({"type": "no-such-type"})).is_err());
        assert!(Schema::compile(&json!({"$ref": "https://example.com/schema.json"})).is_err());
    }
}
