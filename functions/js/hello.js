// A JavaScript function: the standard fetch-event handler of StarlingMonkey (ComponentizeJS),
// exported as `wasi:http/incoming-handler`. Answers like the Rust `hello`, plus `?name=`.
addEventListener("fetch", (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  const url = new URL(request.url);
  const name = url.searchParams.get("name");
  const body = name ? `Hello, ${name}, from JavaScript!\n` : "Hello from JavaScript!\n";
  return new Response(body, { headers: { "content-type": "text/plain", "x-lang": "js" } });
}
