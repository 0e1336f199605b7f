"""Stripe's API semantics, free of HTTP plumbing: auth, accounts, versions, routing.

Checks come in Stripe's order: the key, then the `Stripe-Account` (the platform's own id is
the platform; a connected account's id is that account; anything else is Stripe's 403),
then the `Stripe-Version`, then the path. Before answering, the account's clock-driven
changes due by now are run (state.catch_up), so every answer is as of the emulator's now.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Protocol

from tap_stripe_dd.emulator.accounts import Accounts
from tap_stripe_dd.emulator.events import RETENTION
from tap_stripe_dd.emulator.expansion import Tree, cannot, expand, split, tree
from tap_stripe_dd.emulator.lists import ListQuery, list_body, page
from tap_stripe_dd.emulator.objects import RESOURCES
from tap_stripe_dd.emulator.protocol import (
    NO_KEY,
    Request,
    Response,
    StripeError,
    account_invalid,
    api_key,
    integer,
    invalid,
    invalid_key,
    missing,
    no_permission,
    no_such,
    unknown_parameter,
    unrecognized,
)
from tap_stripe_dd.emulator.state import State
from tap_stripe_dd.emulator.versions import Obj, valid
from tap_stripe_dd.emulator.writes import write

KEY_SHAPE = re.compile(r"(?:sk|rk)_(?:test|live)_[0-9A-Za-z_]{10,}")
ACCOUNT_SHAPE = re.compile(r"acct_[0-9A-Za-z]{1,64}")
compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Host(Protocol):
    """What the API needs from the emulator that holds it."""

    accounts: Accounts
    events_lag: float

    def state(self, account: str | None) -> State: ...
    def advance(self, seconds: float) -> float: ...


def ok(obj: Obj, headers: dict[str, str] | None = None) -> Response:
    return Response(200, compact(obj).encode(), headers or {})


class Api:
    """Answers one request; raises nothing, returns a Response."""

    def __init__(self, host: Host, key: str | None) -> None:
        self.host = host
        self._key = key

    def respond(self, request: Request, now: float) -> Response:
        try:
            if request.path.startswith("/_emulator/"):
                return self.control(request)
            return self.route(request, now)
        except StripeError as error:
            return error.response()

    def control(self, request: Request) -> Response:
        """`POST /_emulator/clock` (form field `advance=<seconds>`); `GET` reads the clock."""
        if request.path != "/_emulator/clock" or request.method not in ("GET", "POST"):
            raise unrecognized(request)
        params = dict(request.params)
        if request.method == "POST":
            for name in params:
                if name != "advance":
                    raise unknown_parameter(name)
            seconds = integer("advance", params.get("advance", ""))
            if seconds < 0:
                raise invalid("The clock only moves forward: advance must be >= 0.", "advance")
            return ok({"now": int(self.host.advance(seconds))})
        return ok({"now": int(self.host.advance(0))})

    def check_key(self, headers: dict[str, str]) -> str:
        key = api_key(headers)
        if key is None:
            raise StripeError(401, NO_KEY)
        if not KEY_SHAPE.fullmatch(key) or (self._key is not None and key != self._key):
            raise invalid_key(key)
        return key

    def route(self, request: Request, now: float) -> Response:
        key = self.check_key(request.headers)
        parts = request.path.split("/")
        if parts[:2] != ["", "v1"] or len(parts) < 3 or not all(parts[2:]):
            raise unrecognized(request)
        header = request.account
        accounts = self.host.accounts
        if header is not None and not (ACCOUNT_SHAPE.fullmatch(header) and accounts.known(header)):
            raise account_invalid(key, header)
        if key.startswith("rk_") and "_noperm" in key:
            raise no_permission(key, header, parts[2] if parts[2] in RESOURCES else "charges")
        account = None if header == accounts.platform else header
        state = self.host.state(account)
        version = request.headers.get("Stripe-Version") or state.version
        if not valid(version):
            raise StripeError(400, f"Invalid Stripe API version: {version}", "api_version_invalid")
        state.catch_up(now)
        name, rest, method = parts[2], parts[3:], request.method
        params, paths = split(request.params)
        if method == "GET" and name == "account" and not rest:
            no_params(params, paths)
            return ok(accounts.object(account or accounts.platform))
        if method == "GET" and name == "accounts" and len(rest) <= 1:
            return self.accounts(rest, params, paths)
        if method == "GET" and name == "events" and len(rest) <= 1:
            return self.events(state, rest, params, paths, now)
        if name not in RESOURCES:
            raise unrecognized(request)
        if method == "GET" and len(rest) <= 1:
            expansions = tree(name, paths, listing=not rest)
            if rest:
                no_params(params, [])
                return self.retrieve(state, name, rest[0], version, expansions)
            indexes, more = page(state, name, ListQuery.parse(name, params), now)
            return Response(
                200, list_body(name, self.bodies(state, name, indexes, version, expansions), more)
            )
        expansions = tree(name, paths, listing=False)
        with state.lock:  # at `now`, or later if another request's catch-up got there first
            done = write(state, max(int(now), state.processed), method, [name, *rest], params)
        if done is None:
            raise unrecognized(request)
        resource, index, request_id = done
        headers = {"Request-Id": request_id}
        if resource == "customers" and index in state.deleted:
            return ok(deleted_customer(state, index), headers)
        (body,) = self.bodies(state, resource, [index], version, expansions)
        return Response(200, body, headers)

    def retrieve(
        self, state: State, resource: str, object_id: str, version: str, expansions: Tree
    ) -> Response:
        index = state.dataset.index_of(resource, object_id)
        if index is None:
            raise no_such(resource, object_id, "id")
        if resource == "customers" and index in state.deleted:
            return ok(deleted_customer(state, index))
        (body,) = self.bodies(state, resource, [index], version, expansions)
        return Response(200, body)

    @staticmethod
    def bodies(
        state: State, resource: str, indexes: Sequence[int], version: str, expansions: Tree
    ) -> list[bytes]:
        if not expansions:
            return state.json(resource, indexes, version)

        def lookup(object_id: str) -> tuple[str, Obj] | None:
            found = state.find(object_id)
            if found is None:
                return None
            if found[0] == "customers" and found[1] in state.deleted:
                return found[0], deleted_customer(state, found[1])
            return found[0], state.render(*found, version)

        return [
            compact(
                expand(
                    resource,
                    state.render(resource, i, version),
                    expansions,
                    lookup,
                    state.refunds_of,
                )
            ).encode()
            for i in indexes
        ]

    def events(
        self, state: State, rest: list[str], params: list, paths: list[str], now: float
    ) -> Response:
        if paths:
            raise cannot(paths[0])
        lag = self.host.events_lag
        if rest:
            no_params(params, [])
            event = state.log.find(rest[0], int(now) - RETENTION, int(now - lag))
            if event is None:
                raise missing("event", rest[0], "id")
            return Response(200, state.log.json(event))
        bodies, more = state.log.page(params, now, lag)
        return Response(200, list_body("events", bodies, more))

    def accounts(self, rest: list[str], params: list, paths: list[str]) -> Response:
        accounts = self.host.accounts
        if paths:
            raise cannot(paths[0])
        if rest:
            no_params(params, [])
            if not accounts.known(rest[0]):
                raise missing("account", rest[0], "account")
            return ok(accounts.object(rest[0]))
        query = ListQuery.parse("accounts", params)
        ids = list(accounts.connected)
        if query.cursor:
            param, cursor = query.cursor
            if cursor not in accounts.created:
                raise missing("account", cursor, param)
            at = ids.index(cursor)
            ids = ids[:at][::-1] if param == "ending_before" else ids[at + 1 :]
        ids = [a for a in ids if query.low < (accounts.created[a], 0) < query.high]
        chosen = ids[: query.limit]
        if query.cursor and query.cursor[0] == "ending_before":
            chosen.reverse()
        bodies = [compact(accounts.object(a)).encode() for a in chosen]
        return Response(200, list_body("accounts", bodies, len(ids) > query.limit))


def deleted_customer(state: State, index: int) -> Obj:
    return {"id": state.dataset.id("customers", index), "object": "customer", "deleted": True}


def no_params(params: list, paths: list[str]) -> None:
    if params:
        raise unknown_parameter(params[0][0])
    if paths:
        raise cannot(paths[0])
