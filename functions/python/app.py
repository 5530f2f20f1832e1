"""A Python function: a plain `wasi:http/incoming-handler` built with componentize-py.

Answers like the Rust `hello` (plus `?name=`), synchronously through the generated bindings:
no asyncio event loop, so a request costs the interpreter's own work and little else.
"""

from urllib.parse import parse_qs, urlsplit

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        query = urlsplit(request.path_with_query() or "/").query
        name = parse_qs(query).get("name", [None])[0]
        text = f"Hello, {name}, from Python!\n" if name else "Hello from Python!\n"

        headers = Fields.from_list([("content-type", b"text/plain"), ("x-lang", b"python")])
        response = OutgoingResponse(headers)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:
            stream.blocking_write_and_flush(text.encode())
        OutgoingBody.finish(body, None)
