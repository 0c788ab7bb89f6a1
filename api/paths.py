"""Route on the raw, percent-encoded path.

OneSignal's clients percent-encode every path segment with no safe characters,
so an alias id may hold an encoded "/" (``%2F``). ASGI servers decode the path
before routing, which would split such a segment in two; routing on the raw path
keeps segments whole, and handlers decode each one (``api.lookup.segment``).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RawPathRouting:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("raw_path"):
            scope = {**scope, "path": scope["raw_path"].decode("ascii", "replace")}
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, however they are framed.

    A declared Content-Length over the limit is refused before anything is read;
    a chunked body is read here, up to the limit, before any handler runs (a
    handler that hit the limit half-way would have to turn it into its own error,
    and FastAPI's body parsing answers any such error with 400)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _too_large(send, self.max_bytes)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await _too_large(send, self.max_bytes)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: wait for a disconnect
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _too_large(send: Send, max_bytes: int) -> None:
    body = (
        b'{"errors":[{"code":"body-too-large","title":"request body over '
        + str(max_bytes).encode()
        + b' bytes"}]}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
