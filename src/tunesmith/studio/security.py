"""The studio's gate, in front of every request (plain ASGI, so streamed responses pass through untouched):

- ``Host`` must name this machine (localhost, its host name, ``--allow-host``) or be an IP literal: a DNS-rebinding
  page reaches the studio under its own domain name, which is refused here.
- a browser's ``Origin`` (and ``Sec-Fetch-Site``) must be the studio's own: cross-site POSTs are refused.
- with a token (always when bound beyond loopback), every request carries it: the ``tunesmith_studio`` cookie
  (set by opening ``/?token=...`` once), or ``Authorization: Bearer``.
- request bodies are limited (uploads have their own, larger limit), checked while they stream in.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

COOKIE = "tunesmith_studio"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class TooLarge(Exception):
    pass


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(bound: str, extra: tuple[str, ...] = ()) -> set[str]:
    """Host names (not IP literals, which are always accepted) this studio answers to."""
    names = {"localhost", socket.gethostname().lower(), socket.getfqdn().lower(), *(h.lower() for h in extra)}
    if bound not in ("0.0.0.0", "::", ""):
        names.add(bound.lower())
    return names


class Guard:
    def __init__(
        self,
        app: Any,
        token: str | None,
        hosts: set[str],
        max_body_bytes: int,
        max_upload_bytes: int,
        upload_paths: tuple[str, ...] = (),
    ) -> None:
        self.app, self.token, self.hosts = app, token, hosts
        self.max_body, self.max_upload, self.upload_paths = max_body_bytes, max_upload_bytes, upload_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if not self._host_ok(host):
            await _refuse(send, 403, f"Host {host!r} is not this studio's (DNS rebinding?); open it by its address")
            return
        refusal = self._origin_refusal(scope["method"], headers, host)
        if refusal:
            await _refuse(send, 403, refusal)
            return
        if self.token is not None:
            given = _given_token(scope, headers)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                await _refuse(send, 401, "this studio needs its token: open the address it printed at start (?token=)")
                return
            if _query_token(scope) is not None and scope["method"] == "GET":
                await _redirect_with_cookie(scope, send, self.token)
                return
        limit = self.max_upload if scope["path"] in self.upload_paths else self.max_body
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _refuse(send, 413, f"request body of {int(length):,} bytes is over the limit of {limit:,} bytes")
            return
        await self._limited(scope, receive, send, limit)

    def _host_ok(self, host: str) -> bool:
        name = urlsplit(f"//{host}").hostname or ""
        try:
            ipaddress.ip_address(name)
            return True  # an IP literal cannot be a rebound domain name
        except ValueError:
            return name.lower() in self.hosts

    def _origin_refusal(self, method: str, headers: dict[str, str], host: str) -> str | None:
        origin = headers.get("origin")
        # Another port on the same host is another origin (and another site's page may sit there): compared whole.
        foreign = origin is not None and origin != "null" and urlsplit(origin).netloc.lower() != host.lower()
        if foreign or (origin == "null" and method not in SAFE_METHODS):
            return f"requests from {origin} are refused: only the studio's own pages may call it"
        if method not in SAFE_METHODS and headers.get("sec-fetch-site") == "cross-site":
            return "cross-site requests are refused: only the studio's own pages may call it"
        return None

    async def _limited(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Run the app with the body counted as it streams in; over ``limit``, the app's answer (whatever it made of
        the cut-off body: FastAPI turns a failed form parse into a 400) is replaced with a 413."""
        seen = 0
        started = exceeded = False

        async def counted() -> dict[str, Any]:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise TooLarge
            return message

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            if exceeded:
                if not started:
                    started = True
                    await _refuse(send, 413, f"request body is over the limit of {limit:,} bytes")
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except TooLarge:
            if not started:
                started = True
                await _refuse(send, 413, f"request body is over the limit of {limit:,} bytes")


def _query_token(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


def _given_token(scope: Scope, headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    cookie = SimpleCookie()
    cookie.load(headers.get("cookie", ""))
    if COOKIE in cookie:
        return cookie[COOKIE].value
    return _query_token(scope)


async def _redirect_with_cookie(scope: Scope, send: Send, token: str) -> None:
    """``?token=`` once: the token moves into an HttpOnly, same-site cookie and leaves the address bar."""
    query = {k: v for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items() if k != "token"}
    location = scope["path"] + (f"?{urlencode(query, doseq=True)}" if query else "")
    cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
    headers = [(b"location", location.encode()), (b"set-cookie", cookie.encode()), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
