"""RFC 6455 on a bare ``asyncio.Protocol``: the WebSocket server under the twilsock gateway.

Why not uvicorn's WebSocket protocols and ASGI: fan-out is the hot path of this server, and there
every notification went through an ASGI ``send`` event, a per-connection queue and writer task and
the WebSocket library's frame serialisation, once per subscriber; every SDK acknowledgement went
through the library's frame parser, an ASGI ``receive`` event and a JSON decoder, only to be
ignored; and each connection held several tasks (memory, and objects the GC walks). Here:

* a connection is a Protocol with no task of its own: frames are parsed in ``data_received``, and
  handed to the ``Handler`` (the gateway) as bytes;
* a server frame is never masked, so a frame is the same bytes for every client: a ``Message`` is
  framed once and written as is to every transport (what ``websockets.broadcast`` does, minus its
  per-connection serialisation), and frames written in one step leave in one ``write``;
* client frames are unmasked by websockets' C speedup, the one piece of that library used per frame.

uvicorn keeps the listening socket, HTTP/1.1 and TLS: an upgrade request goes to the class given
as ``ws=`` (its own hook), and ``ServerConnection`` takes the transport from there. Endpoints are
found by path in the lifespan state (``ENDPOINTS``), so the app, not this module, decides what
answers where. permessage-deflate is negotiated only when enabled (``ws_per_message_deflate``); a
compressed connection encodes each message itself (websockets' extension), at its own cost.

Keepalive: a ping every ``ws_ping_interval``; a connection that has sent nothing (no pong, no
frame) by the next one is dropped. Close: the side that closes sends a close frame and the TCP
connection ends when the peer answers (or after ``CLOSE_TIMEOUT_S``), so the last frames before it
(a twilsock ``close``) are not lost to a reset.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import ipaddress
import json
import logging
import struct
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Protocol, cast

from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.extensions.permessage_deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.headers import build_extension, parse_extension

from storage.wire import errors

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets always ships its C speedups on CPython wheels
    from websockets.utils import apply_mask

log = logging.getLogger("sync.realtime.websocket")

ENDPOINTS = "sync.websocket.endpoints"  # lifespan state key: {path: Endpoint}
PROTOCOL = "realtime.websocket:ServerConnection"  # what uvicorn.run(ws=...) takes (workers import it)
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLOSE_TIMEOUT_S = 2.0

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_PROTOCOL, CLOSE_TOO_BIG, CLOSE_RESTART = 1000, 1001, 1002, 1009, 1012

_CONNECTING, _OPEN, _CLOSING, _CLOSED = 0, 1, 2, 3


def _header(first: int, size: int) -> bytes:
    """The header of an unmasked (server) frame: FIN/RSV/opcode byte, then the payload length."""
    if size < 126:
        return bytes((first, size))
    if size < 65536:
        return struct.pack("!BBH", first, 126, size)
    return struct.pack("!BBQ", first, 127, size)


def frame(payload: bytes, opcode: int = OP_BINARY) -> bytes:
    """One complete unmasked frame: the same bytes may be written to any number of clients."""
    return _header(0x80 | opcode, len(payload)) + payload


class Traffic:
    """What this process's WebSocket connections sent (/metrics): plain ints, counted per write."""

    __slots__ = ("bytes", "frames")

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0


SENT = Traffic()  # every ServerConnection of the process counts here


class Message:
    """One binary message to send to many connections, framed once (``wire``)."""

    __slots__ = ("payload", "wire")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.wire = frame(payload)


class Handler(Protocol):
    """The application side of one connection."""

    def on_message(self, data: bytes) -> None:
        """One complete message (text or binary), as bytes."""

    def on_drained(self) -> None:
        """The transport, once backed up (``write_paused``), takes bytes again."""

    def on_heartbeat(self) -> None:
        """A ping went out (every ``heartbeat_s``): a tick for work that can wait that long."""

    def on_close(self) -> None:
        """The connection is gone (called once)."""


class Endpoint(Protocol):
    def connect(self, ws: ServerConnection) -> Handler:
        """A new connection (the handshake is done): return its handler."""


class ServerConnection(asyncio.Protocol):
    """One WebSocket connection, created by uvicorn (``ws=ServerConnection``) for each upgrade."""

    __slots__ = (
        "_buf",
        "_close_timer",
        "_connections",
        "_endpoints",
        "_proxies",
        "_ext",
        "_fragments",
        "_handler",
        "_max_size",
        "_ping_s",
        "_beat",
        "_beat_slot",
        "_read_paused",
        "_alive",
        "_state",
        "default_headers",
        "host",
        "path",
        "query",
        "scheme",
        "transport",
        "write_paused",
        "deflate",
        "paused_frames",
    )

    def __init__(self, config: Any, server_state: Any, app_state: Mapping[str, Any], **_: Any) -> None:
        # uvicorn's signature for its WebSocket protocol classes (config, server_state, app_state)
        self._endpoints: Mapping[str, Endpoint] = app_state.get(ENDPOINTS) or {}
        self._connections: set[Any] = server_state.connections  # uvicorn's shutdown walks these
        self.default_headers: list[tuple[bytes, bytes]] = server_state.default_headers
        self._max_size: int = config.ws_max_size
        self._ping_s: float | None = config.ws_ping_interval
        # X-Forwarded-Proto is believed from these peers, as uvicorn believes it for HTTP requests
        self._proxies: Proxies | None = None
        if getattr(config, "proxy_headers", False):
            allowed = config.forwarded_allow_ips
            self._proxies = _trusted(tuple(allowed) if isinstance(allowed, list) else allowed)
        self.deflate: bool = bool(config.ws_per_message_deflate)
        self._state = _CONNECTING
        self._buf = bytearray()
        self._fragments: list[bytes] | None = None
        self._handler: Handler | None = None
        self._ext: PerMessageDeflate | None = None
        self._beat = Heartbeat.of(server_state, self._ping_s)  # this server's pings (None: off)
        self._beat_slot = -1  # where this connection is in it, once open (-1: not in it)
        self._close_timer: asyncio.TimerHandle | None = None
        self._alive = True
        self._read_paused = False
        self.write_paused = False  # the transport's buffer is above its high-water mark
        self.paused_frames = 0  # messages written since it went above (a slow consumer's backlog)
        self.path = ""
        self.query = ""
        self.scheme = "ws"
        self.host = ""  # the handshake's Host header, for event URLs (gateway.py); no other header is kept
        self.transport: asyncio.Transport | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, without subclassing it
        self._connections.add(self)
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "wss"

    def data_received(self, data: bytes) -> None:
        if self._state == _CONNECTING:
            self._handshake(data)  # uvicorn hands over the upgrade request, whole, in one call
            return
        if self._state == _CLOSED:
            return
        self._alive = True
        if not self._buf and self._state == _OPEN and not self._read_paused:
            data = self._whole_messages(data)
            if not data:
                return
        self._buf += data
        if not self._read_paused:
            self._parse()

    def _whole_messages(self, data: bytes) -> bytes:
        """The common reads: whole unfragmented text or binary frames of under 64 KiB (SDK acks, a
        request; several acks come in one read when a burst is acked), handed on from ``data`` itself,
        without the buffer's copies and the general parser's checks. Stops at the first thing that is
        not one (a control frame, a fragment, a partial frame, a compressed connection) or when a
        message closed the connection or paused reading; answers what is left for ``_parse``."""
        if self._ext is not None or self._fragments is not None:
            return data  # compressed, or in the middle of a fragmented message
        pos, end = 0, len(data)
        while end - pos >= 6:
            first, second = data[pos], data[pos + 1]
            if (first != 0x82 and first != 0x81) or second < 0x80:
                break  # not FIN + binary/text without RSV bits, or not masked
            size, at = second & 0x7F, pos + 2
            if size == 126:
                size, at = (data[at] << 8) | data[at + 1], at + 2
            elif size > 125:
                break
            stop = at + 4 + size
            if stop > end or size > self._max_size:
                break
            pos = stop
            if self._handler is not None:
                self._handler.on_message(apply_mask(data[at + 4 : stop], data[at : at + 4]))
            if self._state != _OPEN or self._read_paused:
                break
        return data[pos:] if pos else data

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.paused_frames = 0
        if self._handler is not None:
            self._handler.on_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        self._connections.discard(self)
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self._beat is not None and self._beat_slot >= 0:
            self._beat.discard(self, self._beat_slot)
            self._beat_slot = -1
        handler, self._handler = self._handler, None
        if handler is not None:
            handler.on_close()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: the gateway has told twilsock clients to reconnect already."""
        self.close(CLOSE_RESTART)

    # -- sending -------------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self._state == _OPEN

    def send(self, data: bytes) -> None:
        """Send one binary message (dropped once the connection is closing)."""
        self.send_message(Message(data))

    def send_message(self, message: Message) -> None:
        """Send a message framed once for many connections."""
        if self._state != _OPEN:
            return
        assert self.transport is not None
        if self._ext is not None:
            self._write_compressed(message.payload)
        else:
            self.transport.write(message.wire)
        SENT.frames += 1
        SENT.bytes += len(message.payload)
        if self.write_paused:
            self.paused_frames += 1

    def send_many(self, messages: list[Message]) -> None:
        """Several messages in one write (one system call, one TCP segment when they fit)."""
        if self._state != _OPEN:
            return
        assert self.transport is not None
        if self._ext is not None:
            for m in messages:
                self._write_compressed(m.payload)
        else:
            self.transport.write(b"".join([m.wire for m in messages]))
        SENT.frames += len(messages)
        SENT.bytes += sum([len(m.payload) for m in messages])
        if self.write_paused:
            self.paused_frames += len(messages)

    def _write_compressed(self, data: bytes) -> None:
        assert self._ext is not None and self.transport is not None
        out = self._ext.encode(Frame(Opcode.BINARY, data))
        self.transport.write(_header(0x80 | (0x40 if out.rsv1 else 0) | OP_BINARY, len(out.data)) + bytes(out.data))

    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the closing handshake; the TCP connection ends when the peer answers or after
        ``CLOSE_TIMEOUT_S``. Idempotent."""
        if self._state != _OPEN:
            return
        assert self.transport is not None
        self._state = _CLOSING
        self.transport.write(frame(struct.pack("!H", code) + reason.encode()[:120], OP_CLOSE))
        loop = asyncio.get_running_loop()
        self._close_timer = loop.call_later(CLOSE_TIMEOUT_S, self._abort)
        if self._read_paused:  # the peer's close frame must still be read
            self.resume_reading()

    def _abort(self) -> None:
        if self.transport is not None and self._state != _CLOSED:
            self.transport.abort()

    # -- reading -------------------------------------------------------------------------------

    def pause_reading(self) -> None:
        """Read no more frames until ``resume_reading`` (back-pressure from the application:
        the transport stops reading, so TCP pushes back on the client)."""
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and self._state != _CLOSED:
            self._read_paused = False
            self.transport.resume_reading()
            if self._buf:
                self._parse()

    def _parse(self) -> None:
        """Hand every complete frame in the buffer to ``_frame``; keep the rest for later."""
        buf = self._buf
        pos, end = 0, len(buf)
        while end - pos >= 2 and not self._read_paused and self._state != _CLOSED:
            first, second = buf[pos], buf[pos + 1]
            size, at = second & 0x7F, pos + 2
            if size == 126:
                if end - at < 2:
                    break
                size, at = (buf[at] << 8) | buf[at + 1], at + 2
            elif size == 127:
                if end - at < 8:
                    break
                size, at = int.from_bytes(buf[at : at + 8], "big"), at + 8
            if not second & 0x80:
                self._fail(CLOSE_PROTOCOL, "client frames must be masked")
                return
            if size > self._max_size:
                self._fail(CLOSE_TOO_BIG, f"frame larger than {self._max_size} bytes")
                return
            stop = at + 4 + size
            if stop > end:
                break
            payload = apply_mask(bytes(buf[at + 4 : stop]), bytes(buf[at : at + 4]))
            pos = stop
            self._frame(first, payload)
            if not buf:  # the frame failed the connection (``_fail`` emptied the buffer): read no further
                return
        if pos:
            del buf[:pos]

    def _frame(self, first: int, payload: bytes) -> None:
        opcode, fin, rsv = first & 0x0F, first & 0x80, first & 0x70
        if rsv and not (rsv == 0x40 and self._ext is not None and opcode in (OP_TEXT, OP_BINARY)):
            self._fail(CLOSE_PROTOCOL, "reserved bits set")
            return
        if opcode >= OP_CLOSE:
            if not fin or len(payload) > 125:
                self._fail(CLOSE_PROTOCOL, "bad control frame")
            elif opcode == OP_PING:
                if self._state == _OPEN and self.transport is not None:
                    self.transport.write(frame(payload, OP_PONG))
            elif opcode == OP_CLOSE:
                self._closed_by_peer(payload)
            elif opcode != OP_PONG:
                self._fail(CLOSE_PROTOCOL, "unknown opcode")
            return
        if opcode not in (OP_CONT, OP_TEXT, OP_BINARY):
            self._fail(CLOSE_PROTOCOL, "unknown opcode")
            return
        if self._ext is not None:
            try:
                decoded = self._ext.decode(
                    Frame(Opcode(opcode), payload, fin=bool(fin), rsv1=bool(rsv)), max_size=self._max_size
                )
            except PayloadTooBig:
                self._fail(CLOSE_TOO_BIG, f"message larger than {self._max_size} bytes once decompressed")
                return
            except ProtocolError as exc:  # data that does not decompress, RSV1 on a continuation
                self._fail(CLOSE_PROTOCOL, str(exc))
                return
            payload = bytes(decoded.data)
        if opcode == OP_CONT:
            if self._fragments is None:
                self._fail(CLOSE_PROTOCOL, "continuation without a message")
                return
            self._fragments.append(payload)
            if sum(map(len, self._fragments)) > self._max_size:
                self._fail(CLOSE_TOO_BIG, f"message larger than {self._max_size} bytes")
                return
            if not fin:
                return
            payload, self._fragments = b"".join(self._fragments), None
        else:  # text or binary
            if self._fragments is not None:
                self._fail(CLOSE_PROTOCOL, "new message inside a fragmented one")
                return
            if not fin:
                self._fragments = [payload]
                return
        if self._state == _OPEN and self._handler is not None:
            self._handler.on_message(payload)

    def _closed_by_peer(self, payload: bytes) -> None:
        assert self.transport is not None
        if self._state == _OPEN:  # answer with the same code, then end the TCP connection
            self._state = _CLOSING
            code = payload[:2] if len(payload) >= 2 else struct.pack("!H", CLOSE_NORMAL)
            self.transport.write(frame(code, OP_CLOSE))
        self.transport.close()

    def _fail(self, code: int, reason: str) -> None:
        log.debug("closing a WebSocket: %s", reason)
        self._buf.clear()
        if self._state == _OPEN:
            self.close(code, reason)
        elif self.transport is not None:
            self.transport.close()

    # -- keepalive -----------------------------------------------------------------------------

    def _keepalive(self) -> None:
        """Its turn in the ``Heartbeat``: a ping, or the end if the last one got no answer."""
        if self._state != _OPEN or self.transport is None:
            return
        if not self._alive:  # nothing since the last ping, not even its pong
            log.debug("a WebSocket missed its ping: dropping it")
            self.transport.abort()
            return
        self._alive = False
        self.transport.write(frame(b"", OP_PING))
        if self._handler is not None:
            self._handler.on_heartbeat()

    @property
    def heartbeat_s(self) -> float | None:
        """How often ``Handler.on_heartbeat`` is called (the ping interval), or None: never."""
        return self._ping_s or None

    # -- the opening handshake -----------------------------------------------------------------

    def _handshake(self, request: bytes) -> None:
        assert self.transport is not None
        head, _, _ = request.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        target = rest.rpartition(" ")[0]
        self.path, _, self.query = target.partition("?")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.host = headers.get("host", "")
        self._forwarded(headers)
        endpoint = self._endpoints.get(self.path)
        key = headers.get("sec-websocket-key", "")
        if method != "GET":
            self._refuse(errors.METHOD_NOT_ALLOWED(method=method, path=self.path), [("Allow", "GET")])
        elif endpoint is None:
            self._refuse(errors.NOT_FOUND(path=self.path))
        elif headers.get("sec-websocket-version") != "13":
            version = errors.INVALID_PARAMETER("Sec-WebSocket-Version must be 13", status=426)
            self._refuse(version, [("Sec-WebSocket-Version", "13")])
        elif not _valid_key(key):
            self._refuse(errors.INVALID_PARAMETER("Sec-WebSocket-Key is missing or invalid"))
        else:
            accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            extra = self._negotiate(headers.get("sec-websocket-extensions", ""))
            response = [
                "HTTP/1.1 101 Switching Protocols",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Accept: {accept}",
                *(f"{n.decode()}: {v.decode()}" for n, v in self.default_headers),
                *extra,
            ]
            self.transport.write(("\r\n".join(response) + "\r\n\r\n").encode("latin-1"))
            self._state = _OPEN
            self._handler = endpoint.connect(self)
            if self._beat is not None and self._state == _OPEN:
                self._beat_slot = self._beat.add(self)

    def _forwarded(self, headers: Mapping[str, str]) -> None:
        """``wss`` behind a TLS-terminating proxy that says so (X-Forwarded-Proto), if trusted."""
        proto = headers.get("x-forwarded-proto", "").strip().lower()
        if not proto or self._proxies is None or self.transport is None:
            return
        peer = self.transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if _believed(host, self._proxies) and proto in ("http", "https", "ws", "wss"):
            self.scheme = "wss" if proto in ("https", "wss") else "ws"

    def _negotiate(self, offer: str) -> list[str]:
        """Accept permessage-deflate if enabled and offered (the first acceptable offer)."""
        if not self.deflate or not offer:
            return []
        factory = ServerPerMessageDeflateFactory(
            server_max_window_bits=12, client_max_window_bits=12, compress_settings={"memLevel": 5}
        )
        try:
            offers = parse_extension(offer)
        except Exception:
            return []
        for name, params in offers:
            if name != factory.name:
                continue
            try:
                response, self._ext = factory.process_request_params(params, [])
            except Exception:
                continue
            return [f"Sec-WebSocket-Extensions: {build_extension([(name, response)])}"]
        return []

    def _refuse(self, error: errors.TwilioError, extra: list[tuple[str, str]] | None = None) -> None:
        """Answer the upgrade request with an HTTP error in Twilio's JSON shape, and close."""
        assert self.transport is not None
        body = json.dumps(error.body()).encode()
        lines = [
            f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{n}: {v}" for n, v in extra or []),
        ]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        self._state = _CLOSED
        self.transport.close()


class Heartbeat:
    """The pings of every open connection of one server, from one timer: each connection is pinged
    every ``interval_s`` (the first time within one interval after it opened) and dropped when the
    previous ping got no answer. A timer handle per connection is five objects (handle, libuv timer,
    context, bound method, arguments) that the garbage collector walks while a crowd connects, and a
    timer to make per connect; here a connection is an entry in one of ``SLOTS`` sets, served in
    turn, one every ``interval_s / SLOTS``.

    Connections are dealt to the slots in turn, not put in the one served last: a crowd connects
    within a tick or a few (5,000 in under 2 s), and in one slot its pings, and then its pongs, all
    came in one tick, a stall of ~70 ms at 5,000 every interval that delayed whatever arrived then
    (a REST write and its fan-out: fanout.py's p99 at N = 5,000). Dealt over 64 slots, a tick pings
    a 64th of the connections."""

    SLOTS = 64

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._slots: list[set[ServerConnection]] = [set() for _ in range(self.SLOTS)]
        self._next = 0  # the slot the next tick serves
        self._dealt = 0  # connections added so far: the next one goes to slot _dealt % SLOTS
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # the loop time the next tick is due at

    @classmethod
    def of(cls, server_state: Any, interval_s: float | None) -> Heartbeat | None:
        """The server's heartbeat for ``interval_s`` (made on first use; None: pings are off). One
        per uvicorn server, i.e. per event loop, kept on its state as uvicorn keeps its connections."""
        if not interval_s:
            return None
        beat: Heartbeat | None = getattr(server_state, "sync_heartbeat", None)
        if beat is None or beat.interval_s != interval_s:
            beat = cls(interval_s)
            server_state.sync_heartbeat = beat
        return beat

    def add(self, ws: ServerConnection) -> int:
        """Ping ``ws`` from now on; the slot it is in (for ``discard``)."""
        slot = self._dealt % self.SLOTS
        self._dealt += 1
        self._slots[slot].add(ws)
        if self._timer is None:
            self._schedule()
        return slot

    def discard(self, ws: ServerConnection, slot: int) -> None:
        self._slots[slot].discard(ws)

    def _tick(self) -> None:
        due = self._slots[self._next]
        self._next = (self._next + 1) % self.SLOTS
        for ws in list(due):  # a dropped connection leaves its slot (connection_lost) meanwhile
            try:
                ws._keepalive()
            except Exception:  # one connection's failure must not stop the others' pings
                log.exception("a WebSocket's ping failed")
        self._timer = None
        if any(self._slots):  # else idle until the next connection (no wake-ups for nothing)
            self._schedule(self._due)

    def _schedule(self, after: float | None = None) -> None:
        """The next tick, one tick's time after ``after`` (the tick due then; None: now), never in
        the past. Ticks come at fixed times, not a tick's length after the last one ended: over 64
        ticks those lengths would add up to a longer interval."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._due = max((now if after is None else after) + self.interval_s / self.SLOTS, now)
        self._timer = loop.call_at(self._due, self._tick)


Proxies = tuple[bool, frozenset[str], tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]


@functools.lru_cache(maxsize=8)
def _trusted(allowed: str | tuple[str, ...]) -> Proxies:
    """uvicorn's ``forwarded_allow_ips`` ("*", or addresses and networks, comma-separated)."""
    items = [h.strip() for h in (allowed.split(",") if isinstance(allowed, str) else allowed) if h.strip()]
    networks = []
    for item in items:
        if "/" in item:
            with contextlib.suppress(ValueError):
                networks.append(ipaddress.ip_network(item, strict=False))
    return "*" in items, frozenset(items), tuple(networks)


def _believed(host: str, proxies: Proxies) -> bool:
    anyone, literals, networks = proxies
    if anyone or host in literals:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return str(address) in literals or any(address in n for n in networks)


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.encode(), validate=True)) == 16
    except ValueError:
        return False
