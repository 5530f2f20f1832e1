//! `events`: a CloudEvents consumer, as a function bound to a Kafka or RabbitMQ trigger (or any
//! Knative source) receives them: binary content mode, attributes in `ce-*` headers, data as the
//! body. It logs one line per event and answers with what it saw. Data containing `poison` is
//! refused with a 500, so retries and dead-lettering can be watched end to end; a request that is
//! not a CloudEvent gets a 400.

use wisp_sdk::{Request, Response, json};

fn handle(req: Request) -> Response {
    let Some(event) = req.cloud_event() else {
        return Response::error(400, "expected a CloudEvent (ce-id, ce-source, ce-specversion and ce-type headers)");
    };
    let data = req.body_text();
    if data.contains("poison") {
        return Response::error(500, format!("refusing poison event {}", event.id));
    }
    println!("event {} type={} subject={}", event.id, event.ty, event.subject.as_deref().unwrap_or("-"));
    Response::json(&json!({
        "id": event.id,
        "source": event.source,
        "type": event.ty,
        "subject": event.subject,
        "time": event.time,
        "datacontenttype": event.data_content_type,
        "extensions": event.extensions,
        "bytes": req.body().len(),
    }))
}

wisp_sdk::http_handler!(handle);
