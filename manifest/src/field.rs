//! Knative's `apis.FieldError` (knative.dev/pkg/apis/field_error.go): a message, the field paths
//! it applies to and optional details. Errors with the same message and details are merged into
//! one line listing every path (sorted); lines are sorted by message, then details. One line
//! reads `<message>: <path>[, <path>]`, followed by the details on a line of their own.

use std::collections::BTreeMap;
use std::fmt;

/// One finding about one or more fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// What is wrong, e.g. `expected 0 <= -1 <= 1000` or `missing field(s)`.
    pub message: String,
    /// Full paths from the document root, e.g. `spec.template.spec.containerConcurrency`.
    pub paths: Vec<String>,
    /// More explanation, printed on the next line; empty for none.
    pub details: String,
}

/// Every finding about one document (Knative's `FieldError.Also` chain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `message` about `path`.
    pub(crate) fn add(&mut self, message: impl Into<String>, path: impl Into<String>) {
        self.add_details(message, path, "");
    }

    /// `message` about `path`, with details.
    pub(crate) fn add_details(
        &mut self,
        message: impl Into<String>,
        path: impl Into<String>,
        details: impl Into<String>,
    ) {
        self.0.push(FieldError { message: message.into(), paths: vec![path.into()], details: details.into() });
    }

    /// `message` about several paths at once.
    pub(crate) fn add_paths(&mut self, message: impl Into<String>, paths: Vec<String>) {
        self.0.push(FieldError { message: message.into(), paths, details: String::new() });
    }

    /// `missing field(s): path` (`apis.ErrMissingField`).
    pub(crate) fn missing(&mut self, path: impl Into<String>) {
        self.add("missing field(s)", path);
    }

    /// `invalid value: <value>: path` (`apis.ErrInvalidValue`).
    pub(crate) fn invalid(&mut self, value: impl fmt::Display, path: impl Into<String>) {
        self.add(format!("invalid value: {value}"), path);
    }

    /// `invalid value: <value>: path` with details.
    pub(crate) fn invalid_details(
        &mut self,
        value: impl fmt::Display,
        path: impl Into<String>,
        details: impl Into<String>,
    ) {
        self.add_details(format!("invalid value: {value}"), path, details);
    }

    /// `expected <lower> <= <value> <= <upper>: path` (`apis.ErrOutOfBoundsValue`).
    pub(crate) fn out_of_bounds(
        &mut self,
        value: impl fmt::Display,
        lower: impl fmt::Display,
        upper: impl fmt::Display,
        path: impl Into<String>,
    ) {
        self.add(format!("expected {lower} <= {value} <= {upper}"), path);
    }

    /// `must not set the field(s): path` (`apis.ErrDisallowedFields`): fields Knative itself refuses.
    pub(crate) fn disallowed(&mut self, path: impl Into<String>) {
        self.add("must not set the field(s)", path);
    }

    /// `invalid key name "<key>": path` with details (`apis.ErrInvalidKeyName`).
    pub(crate) fn invalid_key(&mut self, key: &str, path: impl Into<String>, details: impl Into<String>) {
        self.add_details(format!("invalid key name {key:?}"), path, details);
    }

    /// `not supported by Wisp: path`: a field Knative accepts that Wisp cannot honour.
    pub(crate) fn unsupported(&mut self, path: impl Into<String>) {
        self.add(UNSUPPORTED, path);
    }

    /// `not supported by Wisp: path`, with what to do instead.
    pub(crate) fn unsupported_details(&mut self, path: impl Into<String>, details: impl Into<String>) {
        self.add_details(UNSUPPORTED, path, details);
    }

    /// `unknown field "<name>": <parent path>`: a field no Kubernetes or Knative schema has.
    pub(crate) fn unknown(&mut self, name: &str, parent: &str) {
        self.add(format!("unknown field {name:?}"), if parent.is_empty() { "(root)" } else { parent });
    }

    /// `expected <want>, got <got>: path`: a value of the wrong JSON type.
    pub(crate) fn wrong_type(&mut self, want: &str, got: &serde_json::Value, path: impl Into<String>) {
        self.add(format!("expected {want}, got {}", type_name(got)), path);
    }

    /// The findings merged and sorted the way Knative prints them.
    pub fn merged(&self) -> Vec<FieldError> {
        let mut by_key: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
        for e in &self.0 {
            let paths = by_key.entry((e.message.as_str(), e.details.as_str())).or_default();
            for p in &e.paths {
                if !paths.contains(p) {
                    paths.push(p.clone());
                }
            }
        }
        by_key
            .into_iter()
            .map(|((message, details), mut paths)| {
                paths.sort();
                FieldError { message: message.to_string(), paths, details: details.to_string() }
            })
            .collect()
    }
}

/// The message of every "Knative accepts it, Wisp cannot honour it" finding.
pub const UNSUPPORTED: &str = "not supported by Wisp";

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.merged().iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {}", e.message, e.paths.join(", "))?;
            if !e.details.is_empty() {
                write!(f, "\n{}", e.details)?;
            }
        }
        Ok(())
    }
}

/// JSON type names for `wrong_type`.
pub(crate) fn type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// `parent.child` (or `child` at the root).
pub(crate) fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() { child.to_string() } else { format!("{parent}.{child}") }
}

/// `parent[i]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_by_message_and_sorts_like_knative() {
        let mut e = FieldErrors::default();
        e.add("b problem", "spec.z");
        e.missing("spec.b");
        e.add("b problem", "spec.a");
        e.missing("spec.a");
        e.missing("spec.a");
        e.add_details("a problem", "x", "why");
        assert_eq!(e.to_string(), "a problem: x\nwhy\nb problem: spec.a, spec.z\nmissing field(s): spec.a, spec.b");
    }
}
