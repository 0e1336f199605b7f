"""The HTTP side: a threaded loopback server, and what happens to each request on the wire."""

from __future__ import annotations

import contextlib
import functools
import math
import random
import socket
import socketserver
import sys
import threading
from collections import deque
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tap_stripe_dd.emulator.api import Api
from tap_stripe_dd.emulator.clock import Clock
from tap_stripe_dd.emulator.faults import HTTP_KINDS, Fault, Faults, RateLimiter
from tap_stripe_dd.emulator.objects import RESOURCES
from tap_stripe_dd.emulator.protocol import (
    Request,
    Response,
    StripeError,
    api_key,
    invalid_key,
    no_permission,
    no_such,
    rate_limited,
    request_id,
    retry_headers,
    server_error,
    unrecognized,
)

LOG_LIMIT = 200_000  # entries kept; a long benchmark should not grow without bound
HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head><body>"
    b"<h1>Service Unavailable</h1><p>The server is temporarily unable to service your request."
    b"</p></body></html>"
)


@dataclass
class LogEntry:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]  # as sent, names canonicalised, without Authorization
    status: int | None  # None while in progress, or if the connection was dropped
    account: str | None


@functools.lru_cache(maxsize=256)  # a client sends the same few names with every request
def canonical(name: str) -> str:
    """`stripe-account` -> `Stripe-Account`, so that log lookups do not depend on the client."""
    return "-".join(part.capitalize() for part in name.split("-"))


def endpoint(path: str) -> str:
    """What Stripe's per-endpoint rate limit counts: `/v1/charges/ch_1` -> `charges`."""
    parts = path.split("/")
    return parts[2] if len(parts) > 2 else path


def injected_error(fault: Fault, request: Request) -> StripeError:
    """The error response an HTTP-status fault stands for, shaped like Stripe's own."""
    parts = request.path.split("/")
    resource = parts[2] if len(parts) > 2 and parts[2] in RESOURCES else None
    status = int(fault.kind)
    if status == 401:
        error = invalid_key(api_key(request.headers) or "")
    elif status == 403:
        error = no_permission(
            api_key(request.headers) or "", request.account, resource or "charges"
        )
    elif status == 404 and resource:
        cursor = dict(request.params).get("starting_after") or dict(request.params).get(
            "ending_before"
        )
        error = no_such(resource, parts[3] if len(parts) > 3 else cursor or "", None)
    elif status == 404:
        error = unrecognized(request)
    elif status == 400:
        error = StripeError(
            400, "Invalid request (a fault the emulator was told to inject).", "parameter_invalid"
        )
    elif status == 429:
        error = rate_limited(fault.retry_after, fault.should_retry)
    else:
        error = server_error(status, fault.retry_after, fault.should_retry)
    error.headers.update(retry_headers(fault.retry_after, fault.should_retry))
    return error


class Service:
    """Turns one parsed request into one response (or a fault) and logs it."""

    def __init__(
        self,
        api: Api,
        faults: Faults,
        limiter: RateLimiter,
        latency_ms: float,
        jitter_ms: float,
        clock: Clock,
    ) -> None:
        self.api = api
        self.clock = clock
        self.platform: str | None = None  # `Stripe-Account: <it>` is the platform's own limit
        self.faults = faults
        self.limiter = limiter
        self.latency = latency_ms / 1000
        self.jitter = jitter_ms / 1000
        self.stopping = threading.Event()
        self.log: deque[LogEntry] = deque(maxlen=LOG_LIMIT)

    def handle(self, handler: Handler) -> None:
        url = urlsplit(handler.path)
        headers = {canonical(name): value for name, value in handler.headers.items()}
        params = parse_qsl(url.query, keep_blank_values=True)
        length = int(headers.get("Content-Length") or 0)
        if length:  # a form-encoded write's parameters, as Stripe takes them
            body = handler.rfile.read(length).decode("utf-8", "replace")
            params += parse_qsl(body, keep_blank_values=True)
        request = Request(handler.command, url.path, params, headers)
        logged = {name: value for name, value in headers.items() if name != "Authorization"}
        entry = LogEntry(request.method, request.path, dict(params), logged, None, request.account)
        self.log.append(entry)  # before answering: a client that has its answer sees its entry
        fault = self.faults.next(request.path)
        response = self.answer(request, fault)
        if response is None:
            handler.drop()
            return
        entry.status = response.status
        handler.reply(
            response, headers.get("Stripe-Version"), fault is not None and fault.kind == "truncate"
        )

    def answer(self, request: Request, fault: Fault | None) -> Response | None:
        """The response to send, or None to drop the connection instead."""
        kind = fault.kind if fault else None
        delay = self.latency + (random.uniform(0, self.jitter) if self.jitter else 0)
        stalled = (delay and self.stopping.wait(delay)) or (
            fault is not None and kind == "slow" and self.stopping.wait(fault.seconds)
        )
        if stalled or kind == "drop":  # stopping while stalled: give up the connection
            return None
        if kind == "nonjson":
            return Response(200, HTML_PAGE, {"Content-Type": "text/html; charset=utf-8"})
        if fault is not None and kind in HTTP_KINDS:
            return injected_error(fault, request).response()
        account = None if request.account == self.platform else request.account
        if (wait := self.limiter.admit(endpoint(request.path), account)) is not None:
            return rate_limited(max(1, math.ceil(wait)), True).response()
        return self.api.respond(request, self.clock.now())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a page walk must not pay a TCP handshake per page
    disable_nagle_algorithm = True  # else small responses wait ~40 ms for a delayed ACK
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)
        if self.server.service.stopping.is_set():  # accepted while stop() closed the others
            self.drop()

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        super().finish()

    def do_GET(self) -> None:
        self.server.service.handle(self)

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header is Stripe's clock: the emulator's."""
        return formatdate(self.server.service.clock.now(), usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a line per request on stderr would cost more than serving it."""

    def reply(self, response: Response, version: str | None, truncate: bool) -> None:
        body = response.body
        self.send_response(response.status)
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Request-Id": request_id(),
            **response.headers,
        }
        if version:
            headers["Stripe-Version"] = version
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if truncate:  # the promised Content-Length is never reached
            self.wfile.write(body[: len(body) // 2])
            self.drop()
        else:
            self.wfile.write(body)

    def drop(self) -> None:
        """Close the connection without (the rest of) a response."""
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client may have gone already
            self.connection.shutdown(socket.SHUT_RDWR)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, port: int, service: Service) -> None:
        self.service = service
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", port), Handler)

    def server_bind(self) -> None:
        """Skip HTTPServer's reverse DNS lookup of the address: it can stall a sandbox."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(connection)

    def close_connections(self) -> None:
        """Unblock handler threads waiting on idle keep-alive connections, so stop() returns."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up mid-response are normal here (timeouts, faults); bugs are not."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)
