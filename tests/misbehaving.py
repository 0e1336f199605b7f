"""A proxy in front of the emulator that breaks Stripe's list contract on one endpoint, as a
buggy server or a caching proxy that drops query parameters would (the emulator itself keeps
the contract)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests

from tap_stripe_dd.emulator import StripeEmulator

Query = dict[str, str]
Body = dict


def drop(*names: str) -> Callable[[Query], Query]:
    return lambda query: {k: v for k, v in query.items() if not k.startswith(names)}


# name: (what the proxy does to the query, what it does to each list page it returns)
BREAKS: dict[str, tuple[Callable[[Query], Query], Callable[[Body], Body]]] = {
    "has_more true on an empty page": (
        dict,
        lambda body: body | {"data": []} if body["has_more"] else body,
    ),
    "no has_more": (dict, lambda body: {k: v for k, v in body.items() if k != "has_more"}),
    "has_more a string": (dict, lambda body: body | {"has_more": str(body["has_more"])}),
    "data not a list": (dict, lambda body: body | {"data": {"0": body["data"]}}),
    "created range ignored": (drop("created"), lambda body: body),
    "cursor ignored (the first page again)": (drop("starting_after"), lambda body: body),
    "oldest first": (dict, lambda body: body | {"data": body["data"][::-1]}),
}


@contextmanager
def misbehaving(emulator: StripeEmulator, path: str, name: str) -> Iterator[str]:
    """The URL of a proxy to `emulator` whose list pages of `path` break the contract `name`."""
    with proxy(emulator, path, *BREAKS[name]) as url:
        yield url


@contextmanager
def proxy(
    emulator: StripeEmulator,
    path: str,
    change_query: Callable[[Query], Query] = dict,
    change_body: Callable[[Body], Body] = dict,
) -> Iterator[str]:
    """The URL of a proxy to `emulator` that changes the query and the answered list pages of
    `path` on their way."""

    class Proxy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = dict(parse_qsl(url.query))
            broken = url.path == path
            if broken:
                query = change_query(query)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            answer = requests.get(
                f"{emulator.url}{url.path}?{urlencode(query)}", headers=headers, timeout=30
            )
            body = answer.content
            if broken and answer.status_code == 200:
                body = json.dumps(change_body(answer.json())).encode()
            self.send_response(answer.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Silent."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
