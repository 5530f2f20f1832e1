//! Object metadata (`metadata:`) as Kubernetes and Knative check it.

use crate::field::{FieldErrors, join};
use crate::k8s::{dns1035_label, dns1123_label, go_list, label_value, qualified_name};
use crate::walk::{Obj, Rules, SERVER_METADATA, UNSUPPORTED_METADATA};
use std::collections::BTreeMap;
use wisp_scheduler::DEFAULT_NAMESPACE;

/// `metadata`, read.
#[derive(Debug, Default)]
pub struct Metadata {
    /// `None` when missing (already reported).
    pub name: Option<String>,
    /// `default` when not given.
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Reads and checks `metadata` of a top-level object (`apis.ValidateObjectMetadata`; the
/// namespace as the API server checks it).
pub fn read_object_meta(root: &mut Obj<'_>, errs: &mut FieldErrors) -> Metadata {
    let mut md = Metadata { namespace: DEFAULT_NAMESPACE.to_string(), ..Metadata::default() };
    let Some(mut m) = root.object("metadata", errs) else {
        errs.add("name or generateName is required", "metadata.name");
        return md;
    };
    let has_generate_name = m.has("generateName");
    match m.str("name", errs) {
        Some(name) if !name.is_empty() => {
            let msgs = dns1035_label(name);
            if msgs.is_empty() {
                md.name = Some(name.to_string());
            } else {
                errs.add(format!("not a DNS 1035 label: {}", go_list(&msgs)), "metadata.name");
            }
        }
        // With generateName the refusal below says it all.
        _ if has_generate_name => {}
        _ => errs.add("name or generateName is required", "metadata.name"),
    }
    if let Some(ns) = m.str("namespace", errs)
        && !ns.is_empty()
    {
        let msgs = dns1123_label(ns);
        if msgs.is_empty() {
            md.namespace = ns.to_string();
        } else {
            errs.invalid_details(ns, "metadata.namespace", msgs.join(", "));
        }
    }
    md.labels = m.string_map("labels", errs);
    md.annotations = m.string_map("annotations", errs);
    check_labels(&md.labels, "metadata.labels", errs);
    check_annotation_keys(&md.annotations, "metadata.annotations", errs);
    m.finish(&Rules { ignored: SERVER_METADATA, unsupported: UNSUPPORTED_METADATA, ..Rules::default() }, errs);
    md
}

/// Label keys are qualified names, values label values.
pub fn check_labels(labels: &BTreeMap<String, String>, path: &str, errs: &mut FieldErrors) {
    for (k, v) in labels {
        let msgs = qualified_name(k);
        if !msgs.is_empty() {
            errs.invalid_key(k, path, msgs.join(", "));
        }
        let msgs = label_value(v);
        if !msgs.is_empty() {
            errs.invalid_details(v, join(path, k), msgs.join(", "));
        }
    }
}

/// Annotation keys are qualified names.
pub fn check_annotation_keys(annotations: &BTreeMap<String, String>, path: &str, errs: &mut FieldErrors) {
    for k in annotations.keys() {
        let msgs = qualified_name(k);
        if !msgs.is_empty() {
            errs.invalid_key(k, path, msgs.join(", "));
        }
    }
}
