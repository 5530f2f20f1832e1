use crate::Headers;

/// A CloudEvent in HTTP *binary content mode*: context attributes come from
/// `ce-*` headers, the data is the request body (see [`crate::Request::body`]).
///
/// Obtain one with [`crate::Request::cloud_event`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudEvent {
    /// `ce-id`
    pub id: String,
    /// `ce-source`
    pub source: String,
    /// `ce-specversion` (normally `"1.0"`)
    pub spec_version: String,
    /// `ce-type`
    pub ty: String,
    /// `ce-subject`
    pub subject: Option<String>,
    /// `ce-time` (RFC 3339 text, not parsed)
    pub time: Option<String>,
    /// `ce-dataschema`
    pub data_schema: Option<String>,
    /// `content-type` of the request (the event's `datacontenttype`)
    pub data_content_type: Option<String>,
    /// Every other `ce-*` header, name without the `ce-` prefix, lower case.
    pub extensions: Vec<(String, String)>,
}

impl CloudEvent {
    /// Read the `ce-*` headers. Returns `None` unless the four required
    /// attributes (`id`, `source`, `specversion`, `type`) are present.
    pub fn from_headers(headers: &Headers) -> Option<CloudEvent> {
        let get = |n: &str| headers.get(n).map(str::to_string);
        let mut ev = CloudEvent {
            id: get("ce-id")?,
            source: get("ce-source")?,
            spec_version: get("ce-specversion")?,
            ty: get("ce-type")?,
            subject: get("ce-subject"),
            time: get("ce-time"),
            data_schema: get("ce-dataschema"),
            data_content_type: get("content-type"),
            extensions: Vec::new(),
        };
        const KNOWN: [&str; 7] = [
            "id",
            "source",
            "specversion",
            "type",
            "subject",
            "time",
            "dataschema",
        ];
        for (name, value) in headers.iter() {
            let lower = name.to_ascii_lowercase();
            if let Some(attr) = lower.strip_prefix("ce-")
                && !KNOWN.contains(&attr)
            {
                let value = String::from_utf8_lossy(value).into_owned();
                ev.extensions.push((attr.to_string(), value));
            }
        }
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use crate::Request;

    #[test]
    fn binary_mode() {
        let r = Request::new("POST", "/")
            .with_header("ce-id", "1")
            .with_header("Ce-Source", "/src")
            .with_header("ce-specversion", "1.0")
            .with_header("ce-type", "com.example.t")
            .with_header("ce-traceparent", "abc")
            .with_header("content-type", "application/json");
        let ev = r.cloud_event().unwrap();
        assert_eq!(
            (ev.id.as_str(), ev.source.as_str(), ev.ty.as_str()),
            ("1", "/src", "com.example.t")
        );
        assert_eq!(ev.data_content_type.as_deref(), Some("application/json"));
        assert_eq!(
            ev.extensions,
            vec![("traceparent".to_string(), "abc".to_string())]
        );
        assert!(
            Request::new("GET", "/")
                .with_header("ce-id", "1")
                .cloud_event()
                .is_none()
        );
    }
}
