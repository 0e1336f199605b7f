"""What a request and a response are, and Stripe's errors: {"error": {"type", "code", ...}}."""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
from dataclasses import dataclass, field

from tap_stripe_dd.emulator.keys import base62
from tap_stripe_dd.emulator.objects import RESOURCES

KEY_PREFIX = re.compile(r"(?:sk|rk|pk)_(?:test|live)_")
INTEGER = re.compile(r"-?[0-9]{1,18}")
NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at "
    "https://support.stripe.com/."
)
SERVER_ERROR = (
    "An unknown error occurred while processing your request. Please try again, or contact "
    "us at https://support.stripe.com/ if the problem persists."
)
RATE_LIMITED = (
    "Request rate limit exceeded. You can learn more about rate limits here "
    "https://stripe.com/docs/rate-limits."
)
request_ids = itertools.count(1)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: list[tuple[str, str]]
    headers: dict[str, str]  # canonical names, e.g. "Stripe-Account"

    @property
    def account(self) -> str | None:
        return self.headers.get("Stripe-Account")


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class StripeError(Exception):
    """An error response in Stripe's shape: {"error": {"type", "code", "message", "param"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        error: dict[str, str] = {"type": kind, "message": message}
        if code:
            doc = code.replace("_", "-")  # Stripe's pages: error-codes/resource-missing
            error |= {"code": code, "doc_url": f"https://stripe.com/docs/error-codes/{doc}"}
        if param:
            error["param"] = param
        self.body = {"error": error}

    def response(self) -> Response:
        return Response(self.status, json.dumps(self.body, indent=2).encode(), self.headers)


def mask(key: str) -> str:
    """How Stripe shows a key in errors: the prefix, a star for each hidden character, and the
    last four characters (all stars if there are no more than four)."""
    prefix = KEY_PREFIX.match(key)
    head = prefix.group() if prefix else ""
    body = key[len(head) :]
    shown = body[-4:] if len(body) > 4 else ""
    return f"{head}{'*' * (len(body) - len(shown))}{shown}"


def api_key(headers: dict[str, str]) -> str | None:
    """The key from `Authorization: Bearer KEY` or Basic auth (key as user), "" if unreadable."""
    value = headers.get("Authorization")
    if value is None:
        return None
    scheme, _, credential = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        return credential.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credential, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return ""


def invalid_key(key: str) -> StripeError:
    return StripeError(401, f"Invalid API Key provided: {mask(key)}")


def no_permission(key: str, account: str | None, resource: str) -> StripeError:
    return StripeError(
        403,
        f"The provided key '{mask(key)}' does not have the required permissions for this "
        f"endpoint on account '{account or 'acct_platform'}'. Having the "
        f"'rak_{RESOURCES[resource].object}_read' permission would allow this request to continue.",
        code="insufficient_permissions",
    )


def no_such(resource: str, object_id: str, param: str | None) -> StripeError:
    return missing(RESOURCES[resource].object, object_id, param)


def missing(object_name: str, object_id: str, param: str | None = None) -> StripeError:
    return StripeError(404, f"No such {object_name}: '{object_id}'", "resource_missing", param)


def account_invalid(key: str, account: str) -> StripeError:
    return StripeError(
        403,
        f"The provided key '{mask(key)}' does not have access to account '{account}' (or "
        "that account does not exist). Application access may have been revoked.",
        "account_invalid",
    )


def invalid(message: str, param: str | None = None, code: str = "parameter_invalid") -> StripeError:
    return StripeError(400, message, code, param)


def unrecognized(request: Request) -> StripeError:
    return StripeError(
        404,
        f"Unrecognized request URL ({request.method}: {request.path}). Please see "
        "https://stripe.com/docs or we can help at https://support.stripe.com/.",
    )


def rate_limited(retry_after: int | None, should_retry: bool | None) -> StripeError:
    return StripeError(
        429, RATE_LIMITED, "rate_limit", headers=retry_headers(retry_after, should_retry)
    )


def server_error(status: int, retry_after: int | None, should_retry: bool | None) -> StripeError:
    return StripeError(
        status, SERVER_ERROR, kind="api_error", headers=retry_headers(retry_after, should_retry)
    )


def retry_headers(retry_after: int | None, should_retry: bool | None) -> dict[str, str]:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    if should_retry is not None:
        headers["Stripe-Should-Retry"] = "true" if should_retry else "false"
    return headers


def integer(name: str, value: str) -> int:
    if not INTEGER.fullmatch(value):
        raise StripeError(400, f"Invalid integer: {value}", "parameter_invalid_integer", name)
    return int(value)


def unknown_parameter(name: str) -> StripeError:
    return StripeError(400, f"Received unknown parameter: {name}", "parameter_unknown", name)


def request_id() -> str:
    return "req_" + base62(next(request_ids), 14)
