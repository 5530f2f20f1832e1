//! `rawhello`: a plain `wasi:http/incoming-handler` component written directly
//! against the `wasi` crate (no wisp-sdk). 200 "Hello from a plain wasi:http
//! component\n" with `x-raw: yes`.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct RawHello;

impl wasi::exports::http::incoming_handler::Guest for RawHello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[
            ("content-type".to_string(), b"text/plain".to_vec()),
            ("x-raw".to_string(), b"yes".to_vec()),
        ])
        .unwrap();
        let response = OutgoingResponse::new(headers);
        response.set_status_code(200).unwrap();
        let body = response.body().unwrap();
        ResponseOutparam::set(response_out, Ok(response));

        let stream = body.write().unwrap();
        // Fits in one write: blocking-write-and-flush takes at most 4096 bytes.
        stream
            .blocking_write_and_flush(b"Hello from a plain wasi:http component\n")
            .unwrap();
        drop(stream);
        OutgoingBody::finish(body, None).unwrap();
    }
}

wasi::http::proxy::export!(RawHello);
