//! CloudEvents 1.0 as functions receive them: HTTP binary content mode (`ce-*` headers, the data
//! as the body, its content type kept), the way Knative's sources deliver, so a function written
//! for Knative runs unchanged.

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use std::time::SystemTime;

/// One event, ready to deliver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// `id`: with `source`, what a receiver deduplicates on.
    pub id: String,
    /// `source`
    pub source: String,
    /// `type`
    pub ty: String,
    /// `subject`
    pub subject: Option<String>,
    /// `time`, RFC 3339.
    pub time: Option<String>,
    /// `datacontenttype`: sent as the request's `content-type`.
    pub content_type: Option<String>,
    /// Other attributes (`dataschema` and extensions), names already valid (`[a-z0-9]`).
    pub extensions: Vec<(String, String)>,
    /// The data: the request body.
    pub data: Bytes,
}

/// A CloudEvents attribute name made from arbitrary text (a Kafka header name, say): lower-cased
/// and filtered to `[a-z0-9]`, as Knative's Kafka source does.
pub fn attribute_name(prefix: &str, name: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + name.len());
    out.push_str(prefix);
    out.extend(name.chars().map(|c| c.to_ascii_lowercase()).filter(|c| c.is_ascii_alphanumeric()));
    out
}

/// RFC 3339 in UTC with milliseconds, for `time`.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Header-safe text: control characters (and anything a header value cannot hold) replaced.
fn header_value(value: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(value).unwrap_or_else(|_| {
        let clean: String =
            value.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '?' }).collect();
        http::HeaderValue::from_str(&clean).expect("printable ASCII is a valid header value")
    })
}

impl Event {
    /// The value of an extension, if set.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Sets (or replaces) an extension.
    pub fn set_extension(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.extensions.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.extensions.push((name.to_string(), value)),
        }
    }

    /// The binary-mode request: `POST /` with the attributes as `ce-*` headers.
    pub fn to_request(&self) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::post("/").body(Full::new(self.data.clone())).expect("static parts are valid");
        let h = req.headers_mut();
        h.insert("ce-specversion", http::HeaderValue::from_static("1.0"));
        h.insert("ce-id", header_value(&self.id));
        h.insert("ce-source", header_value(&self.source));
        h.insert("ce-type", header_value(&self.ty));
        if let Some(subject) = &self.subject {
            h.insert("ce-subject", header_value(subject));
        }
        if let Some(time) = &self.time {
            h.insert("ce-time", header_value(time));
        }
        if let Some(ct) = &self.content_type {
            h.insert(http::header::CONTENT_TYPE, header_value(ct));
        }
        for (name, value) in &self.extensions {
            if let Ok(name) = http::HeaderName::from_bytes(format!("ce-{name}").as_bytes()) {
                h.insert(name, header_value(value));
            }
        }
        req
    }

    /// Reads an event that is already a CloudEvent in binary mode, from `(name, value)` pairs
    /// with `prefix` (`ce-` over HTTP and AMQP, `ce_` over Kafka) and the data. `None` unless
    /// `id`, `source`, `specversion` and `type` are all there.
    pub fn from_binary<'a>(
        prefix: &str,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        content_type: Option<String>,
        data: Bytes,
    ) -> Option<Event> {
        let mut event = Event { content_type, data, ..Event::default() };
        let mut spec_version = false;
        for (name, value) in headers {
            let Some(attr) = name.get(prefix.len()..).filter(|_| name[..prefix.len()].eq_ignore_ascii_case(prefix))
            else {
                continue;
            };
            let attr = attr.to_ascii_lowercase();
            let value = value.to_string();
            match attr.as_str() {
                "specversion" => spec_version = true,
                "id" => event.id = value,
                "source" => event.source = value,
                "type" => event.ty = value,
                "subject" => event.subject = Some(value),
                "time" => event.time = Some(value),
                "datacontenttype" => event.content_type = Some(value),
                _ => event.extensions.push((attribute_name("", &attr), value)),
            }
        }
        (spec_version && !event.id.is_empty() && !event.source.is_empty() && !event.ty.is_empty()).then_some(event)
    }

    /// Reads a structured-mode CloudEvent (`application/cloudevents+json`). `None` if it is not one.
    pub fn from_structured(body: &[u8]) -> Option<Event> {
        let serde_json::Value::Object(map) = serde_json::from_slice(body).ok()? else { return None };
        let text = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let mut event = Event {
            id: text("id")?,
            source: text("source")?,
            ty: text("type")?,
            subject: text("subject"),
            time: text("time"),
            content_type: text("datacontenttype"),
            ..Event::default()
        };
        text("specversion")?;
        event.data = if let Some(b64) = text("data_base64") {
            Bytes::from(base64::engine::general_purpose::STANDARD.decode(b64).ok()?)
        } else {
            match map.get("data") {
                None | Some(serde_json::Value::Null) => Bytes::new(),
                Some(serde_json::Value::String(s))
                    if event.content_type.as_deref().is_some_and(|c| !c.contains("json")) =>
                {
                    Bytes::from(s.clone())
                }
                Some(v) => {
                    event.content_type.get_or_insert_with(|| "application/json".into());
                    Bytes::from(serde_json::to_vec(v).ok()?)
                }
            }
        };
        for (k, v) in &map {
            if matches!(
                k.as_str(),
                "id" | "source"
                    | "type"
                    | "subject"
                    | "time"
                    | "datacontenttype"
                    | "specversion"
                    | "data"
                    | "data_base64"
            ) {
                continue;
            }
            let value = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            event.extensions.push((attribute_name("", k), value));
        }
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_mode_request_carries_every_attribute() {
        let event = Event {
            id: "partition:0/offset:564".into(),
            source: "/apis/v1/namespaces/default/kafkasources/orders#my-topic".into(),
            ty: "dev.knative.kafka.event".into(),
            subject: Some("partition:0#564".into()),
            time: Some("2026-11-23T10:00:00.000Z".into()),
            content_type: Some("application/json".into()),
            extensions: vec![("key".into(), "k1".into()), ("kafkaheaderx".into(), "y\u{7}".into())],
            data: Bytes::from_static(b"{}"),
        };
        let req = event.to_request();
        let h = req.headers();
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(h["ce-specversion"], "1.0");
        assert_eq!(h["ce-id"], "partition:0/offset:564");
        assert_eq!(h["ce-type"], "dev.knative.kafka.event");
        assert_eq!(h["ce-subject"], "partition:0#564");
        assert_eq!(h["ce-time"], "2026-11-23T10:00:00.000Z");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["ce-key"], "k1");
        assert_eq!(h["ce-kafkaheaderx"], "y?");
    }

    #[test]
    fn reads_cloudevents_in_both_modes() {
        let headers =
            [("ce_specversion", "1.0"), ("ce_id", "a"), ("ce_source", "s"), ("ce_type", "t"), ("ce_Foo", "1")];
        let e = Event::from_binary("ce_", headers, Some("text/plain".into()), Bytes::from_static(b"x")).unwrap();
        assert_eq!((e.id.as_str(), e.ty.as_str(), e.extension("foo")), ("a", "t", Some("1")));
        assert!(Event::from_binary("ce_", [("ce_id", "a")], None, Bytes::new()).is_none());

        let json = br#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":{"a":1},"traceid":"z"}"#;
        let e = Event::from_structured(json).unwrap();
        assert_eq!(&e.data[..], br#"{"a":1}"#);
        assert_eq!(e.content_type.as_deref(), Some("application/json"));
        assert_eq!(e.extension("traceid"), Some("z"));
        let b64 = br#"{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"aGVsbG8="}"#;
        assert_eq!(&Event::from_structured(b64).unwrap().data[..], b"hello");
        assert!(Event::from_structured(b"not json").is_none());
    }

    #[test]
    fn attribute_names_are_lowercase_alphanumerics() {
        assert_eq!(attribute_name("kafkaheader", "X-Trace_Id.1"), "kafkaheaderxtraceid1");
    }
}
