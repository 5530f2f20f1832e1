//! Reading a JSON tree strictly: every key of an object is either read, or classified when the
//! object is finished (ignored, refused by Knative, not supported by Wisp, unknown). Values of the
//! wrong type are reported with their path and read as absent.

use crate::field::{FieldErrors, index, join};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// How a key that the reader did not take is judged by [`Obj::finish`].
#[derive(Default)]
pub(crate) struct Rules<'a> {
    /// Kubernetes or Knative fills these in; they carry nothing Wisp keeps.
    pub ignored: &'a [&'a str],
    /// Knative's webhook refuses them (`must not set the field(s)`).
    pub disallowed: &'a [&'a str],
    /// Knative accepts them; Wisp cannot honour them (`not supported by Wisp`).
    pub unsupported: &'a [&'a str],
}

/// An object being read.
pub(crate) struct Obj<'a> {
    map: &'a Map<String, Value>,
    pub path: String,
    taken: BTreeSet<&'a str>,
}

/// Whether a value says nothing: null, `false`, `[]`, or an object of such values. Such a field is as good as absent.
pub(crate) fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        // `kubectl get -o yaml` shows defaulted structs full of empties (a KafkaSource's `net`).
        Value::Object(o) => o.values().all(is_empty),
        // Kubernetes' zero value for a flag: `enableServiceLinks: false` asks for nothing.
        Value::Bool(b) => !b,
        _ => false,
    }
}

impl<'a> Obj<'a> {
    /// `value` at `path` as an object; a wrong type is reported and read as `{}`.
    pub fn new(value: &'a Value, path: &str, errs: &mut FieldErrors) -> Option<Obj<'a>> {
        match value {
            Value::Object(map) => Some(Obj { map, path: path.to_string(), taken: BTreeSet::new() }),
            Value::Null => None,
            other => {
                errs.wrong_type("object", other, path);
                None
            }
        }
    }

    /// The path of a child field.
    pub fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The keys not taken yet.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.map.keys().map(String::as_str).filter(|k| !self.taken.contains(k))
    }

    /// Takes `key`; null reads as absent.
    pub fn get(&mut self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.map.get_key_value(key)?;
        self.taken.insert(k.as_str());
        (!v.is_null()).then_some(v)
    }

    /// Whether the object has `key` with a non-null value (without taking it).
    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    pub fn object(&mut self, key: &str, errs: &mut FieldErrors) -> Option<Obj<'a>> {
        let path = self.at(key);
        self.get(key).and_then(|v| Obj::new(v, &path, errs))
    }

    pub fn str(&mut self, key: &str, errs: &mut FieldErrors) -> Option<&'a str> {
        let path = self.at(key);
        match self.get(key)? {
            Value::String(s) => Some(s),
            other => {
                errs.wrong_type("string", other, path);
                None
            }
        }
    }

    pub fn bool(&mut self, key: &str, errs: &mut FieldErrors) -> Option<bool> {
        let path = self.at(key);
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                errs.wrong_type("boolean", other, path);
                None
            }
        }
    }

    /// An integer (a JSON number without fraction that fits an i64).
    pub fn int(&mut self, key: &str, errs: &mut FieldErrors) -> Option<i64> {
        let path = self.at(key);
        let v = self.get(key)?;
        match v.as_i64() {
            Some(n) => Some(n),
            None => {
                errs.wrong_type("integer", v, path);
                None
            }
        }
    }

    /// An array, each element with its path.
    pub fn array(&mut self, key: &str, errs: &mut FieldErrors) -> Option<Vec<(String, &'a Value)>> {
        let path = self.at(key);
        match self.get(key)? {
            Value::Array(items) => Some(items.iter().enumerate().map(|(i, v)| (index(&path, i), v)).collect()),
            other => {
                errs.wrong_type("array", other, path);
                None
            }
        }
    }

    /// An array of strings.
    pub fn strings(&mut self, key: &str, errs: &mut FieldErrors) -> Option<Vec<(String, &'a str)>> {
        let items = self.array(key, errs)?;
        let mut out = Vec::new();
        for (path, v) in items {
            match v {
                Value::String(s) => out.push((path, s.as_str())),
                other => errs.wrong_type("string", other, path),
            }
        }
        Some(out)
    }

    /// A string-to-string map (labels, annotations); each bad value named by its key's path.
    pub fn string_map(&mut self, key: &str, errs: &mut FieldErrors) -> BTreeMap<String, String> {
        let path = self.at(key);
        let mut out = BTreeMap::new();
        match self.get(key) {
            None => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        other => errs.wrong_type("string", other, join(&path, k)),
                    }
                }
            }
            Some(other) => errs.wrong_type("object", other, path),
        }
        out
    }

    /// Judges every key not taken.
    pub fn finish(self, rules: &Rules<'_>, errs: &mut FieldErrors) {
        for (k, v) in self.map {
            if self.taken.contains(k.as_str()) || rules.ignored.contains(&k.as_str()) {
                continue;
            }
            if rules.unsupported.contains(&k.as_str()) {
                if !is_empty(v) {
                    errs.unsupported(join(&self.path, k));
                }
            } else if rules.disallowed.contains(&k.as_str()) {
                if !is_empty(v) {
                    errs.disallowed(join(&self.path, k));
                }
            } else {
                errs.unknown(k, &self.path);
            }
        }
    }
}

/// Object metadata fields Kubernetes sets itself: read back from `kubectl get -o yaml` output,
/// they mean nothing on input.
pub(crate) const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Object metadata fields that steer Kubernetes machinery Wisp does not have.
pub(crate) const UNSUPPORTED_METADATA: &[&str] = &["generateName", "ownerReferences", "finalizers"];
