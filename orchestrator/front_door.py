"""The API's front door, as plain ASGI middleware in front of FastAPI: a body larger than
MAX_BODY_BYTES is refused before it is read whole, and with API_KEYS set every endpoint but the
probes needs a bearer key. Both answer JSON, as every error of the API does."""
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# what a probe or a scraper reaches without a key
OPEN_PATHS = frozenset({"/healthz", "/metrics"})


async def _refuse(send: Send, status: int, detail: str,
                  headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuses a request body over `max_bytes` with a 413: by its Content-Length when it says
    one, else (a chunked body) as soon as what arrived passes the limit; never more than
    `max_bytes` is held. The body read is then handed to the app as it came."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is over {self.max_bytes} bytes"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _refuse(send, 413, too_large)
            return
        chunks: list[bytes] = []
        size, message = 0, await receive()
        while message["type"] == "http.request":
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _refuse(send, 413, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
            message = await receive()
        if message["type"] != "http.request":  # the client went away: let the app see it
            replayed: Message = message
        else:
            replayed = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        handed = False

        async def replay() -> Message:
            nonlocal handed
            if not handed:
                handed = True
                return replayed
            return await receive()

        await self.app(scope, replay, send)


class BearerKeys:
    """With keys configured, a request needs `Authorization: Bearer <one of them>`, else a 401
    with WWW-Authenticate. Every key is compared, in constant time, whatever matched first; a
    key is never logged (the access log is off, and nothing here says which was tried)."""

    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        await _refuse(send, 401, "a valid API key is needed: Authorization: Bearer <key>",
                      ((b"www-authenticate", b'Bearer realm="orders"'),))

    def _allowed(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given:
            return False
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(key, given.strip())
        return matched


def short(value: Any, limit: int = 64) -> str:
    """What a validation error may echo of the input: a short prefix, never the whole of it."""
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= limit else text[:limit] + "…"
