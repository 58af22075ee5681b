"""Sans-I/O twilsock V3.0 framing: bytes <-> (header, payload), and the server's message builders.

A frame is ``TWILSOCK V3.0 <header byte length>\\r\\n<header JSON>\\r\\n<payload bytes>``; the header
carries ``method``, ``id`` and ``payload_size``. Nothing here does I/O, so the gateway, the Python
client and the tests share one implementation. Wire facts: shared/spec/realtime-sdk-protocol.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from storage.wire.jsontext import dumps, loads

MAGIC = b"TWILSOCK V3.0 "
JSON_TYPE = "application/json"
MAX_BODY_DEPTH = 200  # deeper payload JSON is pruned (Sync data may nest 100 deep, limits.MAX_DEPTH)
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)  # JSON strings and brackets


class ProtocolError(ValueError):
    """The bytes are not a twilsock V3.0 frame (the peer is closed with 406)."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``payload`` is raw bytes; ``body()`` parses it leniently."""

    header: dict[str, Any]
    payload: bytes

    @property
    def method(self) -> str:
        return str(self.header.get("method", ""))

    @property
    def id(self) -> str:
        return str(self.header.get("id", ""))

    def body(self) -> Any:
        """The payload as JSON, or None when it is empty or not JSON.

        twilio-sync 4.0.1 sends a non-JSON payload on tunnelled DELETEs while declaring JSON, so a
        payload that does not parse is treated as absent rather than as an error.
        """
        if not self.payload:
            return None
        ptype = str(self.header.get("payload_type") or JSON_TYPE)
        if ptype.startswith("text/plain"):
            return self.payload.decode("utf-8", "replace")
        try:
            return loads(self.payload)
        except ValueError:
            return None
        except RecursionError:  # nested too deep to parse: keep the rest, so the answer can say why
            try:
                return loads(prune(self.payload, MAX_BODY_DEPTH))
            except (ValueError, RecursionError):
                return None


def prune(text: bytes, limit: int) -> bytes:
    """``text`` with each array or object nested deeper than ``limit`` replaced by ``[]``, found
    without recursing: JSON that is too deep for json.loads stays too deep to be valid Sync data."""
    out: list[bytes] = []
    depth, last, skipping = 0, 0, False
    for m in _TOKENS.finditer(text):
        token = m.group()
        if token.startswith(b'"'):
            continue  # a string is copied (or skipped) with the text around it
        if token in (b"[", b"{"):
            depth += 1
            if depth == limit + 1 and not skipping:
                out += [text[last : m.start()], b"[]"]
                skipping = True
            continue
        if skipping and depth == limit + 1:
            skipping, last = False, m.end()
        depth -= 1
    if not skipping:
        out.append(text[last:])
    return b"".join(out)


_HEADER_ID = re.compile(rb'"id":"([^"]{1,95})"')


def header_id(data: bytes) -> bytes | None:
    """The message id in a frame's header, found in its first bytes without decoding JSON (the
    header comes first, and its id is its first or second field in every client and in this
    server's frames), or None."""
    m = _HEADER_ID.search(data, 0, 300)
    return m[1] if m else None


def new_id() -> str:
    """A message id in the SDK's own shape: ``TM`` + a dashed random (version 4) UUID, formatted
    from 16 random bytes: a fifth of the cost of ``str(uuid.uuid4())``, once per frame the server
    starts (each notification, each subscription answer)."""
    h = os.urandom(16).hex()
    return f"TM{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


_VARIANT = "89ab"  # RFC 4122's variant bits (10xx) in the first hex digit of the fourth group


def encode(header: dict[str, Any], payload: Any = None) -> bytes:
    """Build one frame; ``payload`` may be bytes, a str or a JSON-able value (None = empty)."""
    if payload is None:
        body = b""
    elif isinstance(payload, bytes):
        body = payload
    elif isinstance(payload, str):
        body = payload.encode()
    else:
        body = dumps(payload)
    head = dumps({**header, "payload_size": len(body)})
    return MAGIC + str(len(head)).encode() + b"\r\n" + head + b"\r\n" + body


def decode(data: bytes) -> Frame:
    """Parse one frame; raise ProtocolError on anything that is not twilsock V3.0."""
    if not data.startswith(MAGIC):
        raise ProtocolError("not a TWILSOCK V3.0 frame")
    eol = data.find(b"\r\n", len(MAGIC))
    if eol < 0:
        raise ProtocolError("no header length line")
    try:
        size = int(data[len(MAGIC) : eol])
    except ValueError:
        raise ProtocolError("bad header length") from None
    start = eol + 2
    raw_header = data[start : start + size]
    if len(raw_header) != size or size <= 0:
        raise ProtocolError("truncated header")
    try:
        header = loads(raw_header)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        raise ProtocolError("header is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("method"), str):
        raise ProtocolError("header has no method")
    body_start = start + size + 2
    psize = header.get("payload_size") or 0
    if not isinstance(psize, int) or psize < 0:
        raise ProtocolError("bad payload_size")
    payload = data[body_start : body_start + psize]
    if len(payload) != psize:
        raise ProtocolError("truncated payload")
    return Frame(header, payload)


def status(code: int, text: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "status": text, **extra}


def reply(msg_id: str, code: int = 200, text: str = "OK", payload: Any = None, **extra: Any) -> bytes:
    """A ``reply`` to the request with id ``msg_id`` (init, update, or an acknowledgement)."""
    header = {"method": "reply", "id": msg_id, "status": status(code, text), **extra}
    if payload is not None:
        header["payload_type"] = JSON_TYPE
    return encode(header, payload)


def error_reply(msg_id: str, code: int, text: str, error_code: int, description: str, payload: Any = None) -> bytes:
    """A failed ``reply`` (a refused init or update): 401/403 are terminal for the SDK."""
    header = {
        "method": "reply",
        "id": msg_id,
        "status": status(code, text, errorCode=error_code, description=description),
    }
    if payload is not None:
        header["payload_type"] = JSON_TYPE
    return encode(header, payload)


def http_reply(msg_id: str, http_code: int, http_text: str, body: Any, headers: dict[str, str] | None = None) -> bytes:
    """The answer to a tunnelled HTTP request: transport OK, the HTTP outcome in ``http_status``."""
    header = {
        "method": "reply",
        "id": msg_id,
        "payload_type": JSON_TYPE,
        "status": status(200, "OK"),
        "http_status": status(http_code, http_text),
        "http_headers": headers or {},
    }
    return encode(header, body if body is not None else b"")


def notification(body: Any, message_type: str = "twilio.sync.event") -> bytes:
    """A server push. Every Sync event goes as ``twilio.sync.event``, which the SDK treats as ordered."""
    header = {"method": "notification", "id": new_id(), "message_type": message_type, "payload_type": JSON_TYPE}
    return encode(header, body)


def client_update(update_type: str = "token_about_to_expire") -> bytes:
    return encode({"method": "client_update", "id": new_id(), "client_update_type": update_type})


def close(code: int, text: str, payload: Any = None) -> bytes:
    """``close``: 308 = reconnect elsewhere (``backoff_policy`` in the payload), 410 = token expired,
    401 = unauthorised, 406 = unparseable frame."""
    header: dict[str, Any] = {"method": "close", "id": new_id(), "status": status(code, text)}
    if payload is not None:
        header["payload_type"] = JSON_TYPE
    return encode(header, payload)
