"""uvicorn's httptools HTTP/1.1 protocol with the limits it lacks: head and body read timeouts and a
cap on the request head.

uvicorn (httptools implementation) times out only an idle keep-alive connection *after* a response:
a client that opens a connection and trickles its request head a byte at a time, or announces a body
and stops sending it, holds a connection (a file descriptor, a parser, perhaps an app task) for ever,
and some thousands of them stop the server accepting. Nor does it bound the head: an 8 MiB header
or 10,000 headers are buffered and handed to the app. ``LimitedHttpToolsProtocol`` is the same
class (the same parser and speed, one timer per connection, no task) that

- closes a connection whose request head is not complete ``head_timeout_s`` after the connection
  was made or after the request's first byte (the idle wait between keep-alive requests stays
  uvicorn's ``timeout_keep_alive``, timed by the same timer), as nginx's ``client_header_timeout``
  does (no answer);
- closes a connection whose request body makes no progress for ``body_timeout_s``, answering 408
  first when nothing of a response was sent (nginx's ``client_body_timeout``). Time while the server
  itself is not reading (flow control, waiting for the app to ask for ``100 Continue``) or while a
  previous pipelined request is answered never counts against the client;
- answers 431 (Twilio's JSON error body) and closes once the head's bytes (request line and header
  lines) exceed ``max_header_bytes`` or its header fields ``max_headers``, before buffering more;
- never touches a connection upgraded to a WebSocket: its timer is cancelled at the upgrade, and
  uvicorn hands the transport to the websockets protocol.

uvicorn is given the class by its import string (``http=PROTOCOL``), and the class reads its limits
from the environment once per process, as ``app.main:create_app`` reads its settings: worker
processes (``SYNC_WORKERS`` > 1) rebuild everything from the environment the CLI filled, and a string
is imported only once a worker runs (a class in the pickled Config would import the whole app while
the worker unpickles it, outside uvicorn's Ctrl-C handling).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.observe import HEADER, new_request_id
from app.settings import Settings
from storage.wire import errors
from storage.wire.errors import TwilioError

# what the connection is waiting for from the client: nothing (the app is answering), a request
# head, a request body, or the next request of a keep-alive connection
_IDLE, _HEAD, _BODY, _KEEP_ALIVE = 0, 1, 2, 3
# a request head as simple as WebSocket clients send: GET in origin form, HTTP/1.1, header lines
# of a token, a colon and visible characters (RFC 9110 field-value, with obs-text), then the blank line
_PLAIN_HEAD = re.compile(rb"GET /[!-~]* HTTP/1\.1\r\n(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t -~\x80-\xff]*\r\n)+\r\n")
_UPGRADE_FIELDS = re.compile(rb"\r\n(connection|upgrade):[ \t]*([^\r]*)", re.IGNORECASE)


@dataclass(frozen=True)
class HttpLimits:
    head_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int
    max_headers: int

    @classmethod
    def of(cls, settings: Settings) -> HttpLimits:
        return cls(
            settings.http_head_timeout_s,
            settings.http_body_timeout_s,
            settings.http_max_header_bytes,
            settings.http_max_headers,
        )


PROTOCOL = "app.http_protocol:LimitedHttpToolsProtocol"  # what uvicorn.run(http=...) takes


@functools.cache
def limits_from_env() -> HttpLimits:
    return HttpLimits.of(Settings.from_env())


class HeadWithBody:
    """The transport as one response sees it: the response head leaves in one write with the body.

    uvicorn writes a response's head (``http.response.start``) and its body in two ``write`` calls:
    two system calls and two TCP segments per answer, the first waking the client only to make it
    wait for the second. A socket write that wakes another process costs far more than the bytes it
    carries (README, Performance: a sequential POST costs one system call fewer and answers sooner).
    So the head of a response with a ``content-length`` is held until the next write, which carries
    both, or until the response is complete (a HEAD answer has no body write) or the connection
    closes. A streamed head (chunked: the console's event streams) and ``100 Continue`` leave at once.
    Why not flush at the end of the loop turn (``call_soon``): under load that extra callback per
    response cost more than the system call it saves.
    """

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 1") and _CHUNKED not in data:
            self._held = data
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_CHUNKED = b"\r\ntransfer-encoding: chunked\r\n"


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing (httptools wraps it in HttpParserCallbackError)."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, limits: HttpLimits | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits or limits_from_env()
        self._waiting = _IDLE
        self._since = 0.0  # when the wait began, or the body last progressed
        self._timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # request line and header lines parsed so far (exact)
        self._head_fields = 0
        self._head_chunks = 0  # bytes of the chunks that were wholly head (an unfinished header)
        self._head_open = False  # a request began and its head is not complete
        self._first = True  # nothing received yet (``_upgrade_at_once``)
        # inside the parser: a wait that begins there is armed once it returns, if it is still on
        # (a request that came whole in one read, the usual case, never needs its timer)
        self._feeding = False
        # the timer never fires later than this after it was armed, so a wait that begins while it
        # is armed (for an older, later deadline) is never checked late; at least 10 ms, so that a
        # keep-alive timeout of 0 (uvicorn's "close after the answer") cannot make it spin
        timeouts = (self.limits.head_timeout_s, self.limits.body_timeout_s, self.timeout_keep_alive)
        self._shortest = max(0.01, min(timeouts))

    # -- the one timer: armed when a wait begins and none is, checked when it fires, re-armed for
    # what is left. A wait that ends is not disarmed (``_stop_waiting``): on a busy keep-alive
    # connection the timer fires every ``_shortest`` seconds at most, where a timer made and
    # cancelled per request (uvicorn's keep-alive, a head and a body wait) cost every request.

    def _wait_for(self, what: int) -> None:
        self._waiting = what
        self._since = now = self.loop.time()
        if self._timer is None and not self._feeding:
            self._arm(now)

    def _arm(self, now: float | None = None) -> None:
        now = self.loop.time() if now is None else now
        delay = min(self._since + self._timeout() - now, self._shortest)
        self._timer = self.loop.call_later(delay, self._check)

    def _stop_waiting(self) -> None:
        self._waiting = _IDLE

    def _disarm(self) -> None:
        """No more waits on this connection (closed, or handed to the WebSocket protocol)."""
        self._waiting = _IDLE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timeout(self) -> float:
        waiting = self._waiting
        if waiting == _HEAD:
            return self.limits.head_timeout_s
        return self.limits.body_timeout_s if waiting == _BODY else float(self.timeout_keep_alive)

    def _server_is_the_one_waiting(self) -> bool:
        """Reading is paused (flow control, a pipelined request queued), the app has not asked for
        the body of an ``Expect: 100-continue`` request yet, or a previous request is being answered."""
        cycle = self.cycle
        if self.flow.read_paused:
            return True
        if self._waiting == _BODY:
            return cycle is not None and cycle.waiting_for_100_continue
        return cycle is not None and not cycle.response_complete

    def _check(self) -> None:
        self._timer = None
        if self._waiting == _IDLE or self.transport.is_closing():
            return
        now = self.loop.time()
        if self._server_is_the_one_waiting():
            self._since = now
        if now < self._since + self._timeout():
            self._arm(now)
            return
        cycle = self.cycle
        if self._waiting == _KEEP_ALIVE:
            self.timeout_keep_alive_handler()  # uvicorn's: an idle keep-alive connection is closed
        elif self._waiting == _BODY and cycle is not None and not cycle.response_started:
            self._refuse(errors.REQUEST_TIMEOUT(seconds=self.limits.body_timeout_s))
        else:
            self.transport.close()  # a head that never completes: closed without an answer (as nginx)

    def _refuse(self, error: TwilioError) -> None:
        body = json.dumps(error.body()).encode()
        head = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"%s: %s\r\n" % (HEADER.encode(), new_request_id().encode()),  # as every answer of the app
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    # -- connection and parser callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for(_HEAD)  # the first request's head (uvicorn has no timer before it)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _unset_keepalive_if_required(self) -> None:
        if self._waiting == _KEEP_ALIVE:  # the keep-alive wait is the one timer's (``on_response_complete``)
            self._waiting = _IDLE

    def on_response_complete(self) -> None:
        """uvicorn's, but the wait for the next request is the one timer's, not a timer of its own."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # a pipelined request was waiting for this answer
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._wait_for(_KEEP_ALIVE)

    def data_received(self, data: bytes) -> None:
        # uvicorn's, but a head over the limits is answered 431 (not 400), and a head still open
        # after a whole chunk of it counts that chunk: httptools buffers an unfinished header itself
        if self._first:
            self._first = False
            if data.startswith(b"GET ") and self._upgrade_at_once(data):
                return
        self._unset_keepalive_if_required()
        head_was_open = self._head_open
        self._feeding = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:  # a callback's exception is its __context__
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse_head()
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        finally:
            self._feeding = False
            if self._waiting != _IDLE and self._timer is None and not self.transport.is_closing():
                self._arm()
        if head_was_open and self._head_open:
            self._head_chunks += len(data)
            if self._head_chunks > self.limits.max_header_bytes:
                self._refuse_head()

    def _refuse_head(self) -> None:
        self._disarm()
        self._head_open = False
        limits = self.limits
        self._refuse(errors.HEADERS_TOO_LARGE(max_bytes=limits.max_header_bytes, max_fields=limits.max_headers))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_bytes = self._head_fields = self._head_chunks = 0
        if self._waiting != _HEAD:  # the first request's head is timed from the connection
            self._wait_for(_HEAD)

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self.limits.max_header_bytes:
            raise _HeadTooLarge
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4  # "name: value\r\n"
        self._head_fields += 1
        if self._head_bytes > self.limits.max_header_bytes or self._head_fields > self.limits.max_headers:
            raise _HeadTooLarge
        # uvicorn's own on_header, inline (one Python call per header line, not two)
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp keeps trailing OWS, which RFC 9110 excludes from the value
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_open = False
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before and cycle is not None:  # a new request (not an upgrade)
            held = HeadWithBody(self.transport)
            cycle.transport = held  # type: ignore[assignment]  # the calls a cycle makes: write, close, is_closing
            cycle.on_response = functools.partial(self._response_done, held)
        if self.parser.should_upgrade() and self._should_upgrade():
            self._disarm()  # a WebSocket: never timed here
        else:
            self._wait_for(_BODY)  # ends at on_message_complete, at once when there is no body

    def _response_done(self, held: HeadWithBody) -> None:
        held.flush()
        self.on_response_complete()

    def on_body(self, body: bytes) -> None:
        self._since = self.loop.time()  # progress
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._stop_waiting()
        super().on_message_complete()

    def _upgrade_at_once(self, data: bytes) -> bool:
        """The connection's first read is a whole, plain WebSocket upgrade request (what every
        client sends, and all it sends before the 101): handed to the WebSocket protocol as it came,
        without the HTTP parser's callbacks and uvicorn's request scope, which it does not use (a
        tenth of a twilsock connect's CPU). It must be a ``GET`` in origin form, HTTP/1.1, with
        well-formed header lines, within the head limits, with one ``Upgrade: websocket`` and one
        ``Connection`` that lists ``upgrade``, and nothing after the head: anything else goes the
        usual way, so every request gets the answer it got before (uvicorn upgrades exactly these)."""
        limits = self.limits
        if len(data) > limits.max_header_bytes or self.ws_protocol_class is None or not _PLAIN_HEAD.fullmatch(data):
            return False
        if data.count(b"\r\n") - 2 > limits.max_headers:
            return False
        found = _UPGRADE_FIELDS.findall(data)
        fields = {name.lower(): value.rstrip(b" \t").lower() for name, value in found}
        if len(found) != 2 or len(fields) != 2 or fields[b"upgrade"] != b"websocket":  # each once
            return False
        if b"upgrade" not in [token.strip() for token in fields[b"connection"].split(b",")]:
            return False
        self.handle_websocket_upgrade(data)
        return True

    def handle_websocket_upgrade(self, request: bytes | None = None) -> None:
        """uvicorn's, or with ``request``: that request, as it came, to the WebSocket protocol."""
        self._disarm()
        if request is None:
            super().handle_websocket_upgrade()  # it rebuilds the request from the parsed head
        else:
            self.connections.discard(self)
            protocol = self.ws_protocol_class
            assert protocol is not None  # checked by _upgrade_at_once
            ws = protocol(config=self.config, server_state=self.server_state, app_state=self.app_state)  # type: ignore[call-arg]
            ws.connection_made(self.transport)
            self.transport.set_protocol(ws)
            ws.data_received(request)
        # The connection is the WebSocket protocol's now. This object and its parser hold each other
        # (httptools calls back into it), so without this they (with the request's scope, headers
        # and addresses, ~1.5 KB) would wait for a cyclic GC pass; freed as data_received returns.
        self.parser = None  # type: ignore[assignment]
