"""Parsing and validating Twilio's wire parameters. Twilio's parameter names live only here."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartParser
from starlette.requests import Request

from storage import Kind, limits, paging
from storage.errors import InvalidInputError
from storage.limits import MAX_DATA, MAX_DEBOUNCING_WINDOW_MS, MIN_DEBOUNCING_WINDOW_MS
from storage.paging import Cursor
from storage.wire import errors
from storage.wire.errors import TwilioError

MAX_BODY = 256 * 1024  # form bodies: 16 KiB of Data percent-encoded is at most 48 KiB
_REVISION = re.compile(r"^[0-9a-f]{1,16}$")


def _too_large() -> TwilioError:
    return errors.TOO_LARGE(f"the body exceeds {MAX_BODY // 1024} KiB")


async def _bounded(request: Request) -> AsyncGenerator[bytes, None]:
    """The body's chunks, refused with 413 once they pass MAX_BODY: a chunked body has no
    Content-Length to refuse up front, and whatever follows the limit is never read."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _too_large()
        yield chunk


async def _read(request: Request) -> bytes:
    """The whole body, refused with 413 once it passes MAX_BODY (``_bounded``'s limit, in one loop:
    a REST write's form is read on every write's path)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _unquote(text: str) -> str:
    """``urllib.parse.unquote`` (UTF-8, invalid sequences replaced), a few times faster on what a
    form body is, ASCII with many escapes (a JSON ``Data``): each ``%XX`` becomes ``\\xXX`` for the C
    ``unicode_escape`` codec (backslashes doubled first), which gives the escaped bytes as code points
    0-255. A ``%`` without two hex digits after it makes the codec fail, and the text goes the
    standard library's way, as does any non-ASCII text."""
    if "%" not in text:
        return text
    if text.isascii():
        try:
            latin = text.replace("\\", "\\\\").replace("%", "\\x").encode().decode("unicode_escape")
            return latin.encode("latin-1").decode("utf-8", "replace")
        except UnicodeDecodeError:
            pass
    return unquote(text)


def parse_form(body: str) -> list[tuple[str, str]]:
    """What ``urllib.parse.parse_qsl(body, keep_blank_values=True)`` answers, with ``_unquote``."""
    pairs = []
    for field in body.split("&"):
        if not field:
            continue
        name, eq, value = field.partition("=")
        pairs.append((_unquote(name.replace("+", " ")), _unquote(value.replace("+", " ")) if eq else ""))
    return pairs


class Form(FormData):
    """Starlette's FormData with a direct ``get``: the Mapping mixin's goes through ``__getitem__``
    and a KeyError for every absent parameter, and a write asks for several (Ttl, ItemTtl, …)."""

    def get(self, key: Any, default: Any = None) -> Any:
        return self._dict.get(key, default)


async def form(request: Request) -> FormData:
    """The form body (empty for other content types, as Twilio ignores them), at most MAX_BODY bytes
    whatever the framing."""
    ctype = request.headers.get("content-type", "")
    if request.method in ("GET", "DELETE"):
        return FormData()
    length = request.headers.get("content-length", "0")
    if limits.is_count(length) and int(length) > MAX_BODY:
        raise _too_large()
    try:
        if ctype.startswith("application/x-www-form-urlencoded"):
            # far faster than the multipart parser for the common case (parse_form: parse_qsl, faster)
            body = (await _read(request)).decode()
            return Form(cast(list[tuple[str, str | UploadFile]], parse_form(body)))
        if ctype.startswith("multipart/"):
            return await MultiPartParser(request.headers, _bounded(request)).parse()
    except TwilioError:
        raise
    except Exception as exc:
        raise errors.INVALID_PARAMETER("Malformed form body") from exc
    return FormData()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # json.loads would accept NaN and Infinity


_DATA = json.JSONDecoder(parse_constant=_reject_constant)  # made once: json.loads(…, parse_constant=) makes one a call


def data(values: Mapping[str, Any], target: Kind, required: bool, limit: int = MAX_DATA) -> str | None:
    """``Data`` as compact JSON text, or None when absent and not required (``target`` names the
    error for a missing one: a Document's, a List or Map item's, a Stream message's)."""
    raw = values.get("Data")
    if raw is None:
        if required:
            raise errors.DATA_MISSING[target]()
        return None
    try:
        parsed = _DATA.decode(raw)
    except (ValueError, TypeError, RecursionError):  # RecursionError: nested too deep to parse
        raise InvalidInputError("data", message="Data must be a valid JSON string") from None
    return limits.compact_data(parsed, limit)


def ttl(values: Mapping[str, Any], *names: str) -> int | None:
    """The first TTL parameter present among ``names`` (the later ones are aliases, ignored if an
    earlier one is given, as Twilio documents for ``ItemTtl``/``Ttl`` and ``CollectionTtl``/``Ttl``)."""
    for name in names:
        raw = values.get(name)
        if raw is None or raw == "":
            continue
        if not limits.is_count(raw):
            raise InvalidInputError("ttl", name)
        return limits.check_ttl(int(raw), name)
    return None


def unique_name(values: Mapping[str, Any]) -> str | None:
    raw = values.get("UniqueName")
    if raw is None:
        return None
    return limits.check_unique_name(str(raw))


def key(raw: Any) -> str:
    return limits.check_key("" if raw is None else str(raw))


def index(raw: str) -> str:
    return limits.check_index(raw)


def if_match(request: Request) -> str | None:
    raw = request.headers.get("if-match")
    if raw is None or raw == "":
        return None
    value = raw.strip().strip('"')
    if value.startswith("W/"):
        value = value[2:].strip('"')
    if value != "-1" and not _REVISION.match(value):
        raise errors.INVALID_IF_MATCH(raw)
    return value


def boolean(values: Mapping[str, Any], name: str) -> bool | None:
    raw = values.get(name)
    if raw is None:
        return None
    low = str(raw).lower()
    if low not in ("true", "false"):
        raise errors.INVALID_PARAMETER(f"Invalid {name}: must be true or false")
    return low == "true"


def friendly_name(values: Mapping[str, Any]) -> str | None:
    raw = values.get("FriendlyName")
    if raw is not None and (not raw or len(raw) > 255):
        raise errors.INVALID_FRIENDLY_NAME()
    return None if raw is None else str(raw)


_URL_CHARS = re.compile(r"[\x21-\x7e]+")  # printable ASCII: no whitespace, control or non-ASCII characters
_HOST_NAME = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=-]+")  # RFC 3986 reg-name


def webhook_url(values: Mapping[str, Any]) -> str | None:
    """An absolute http(s) URL that is sent exactly as written (Twilio signs the URL as configured, so
    nothing may be re-encoded on the way): printable ASCII only (percent-encode the rest), a host and
    port that parse. A URL the client would refuse must fail here, not at every delivery."""
    raw = values.get("WebhookUrl")
    if raw is None or raw == "":
        return None
    url = str(raw)
    if len(url) > 512 or not _URL_CHARS.fullmatch(url):
        raise errors.INVALID_WEBHOOK_URL()
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # both raise ValueError when they do not parse
    except ValueError:
        raise errors.INVALID_WEBHOOK_URL() from None
    if parts.scheme not in ("http", "https") or not host:
        raise errors.INVALID_WEBHOOK_URL()
    if parts.netloc.rpartition("@")[2].startswith("["):
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise errors.INVALID_WEBHOOK_URL() from None
    elif not _HOST_NAME.fullmatch(host):
        raise errors.INVALID_WEBHOOK_URL()
    return url


def debouncing_window(values: Mapping[str, Any]) -> int | None:
    raw = values.get("ReachabilityDebouncingWindow")
    if raw is None:
        return None
    if not limits.is_count(raw) or not MIN_DEBOUNCING_WINDOW_MS <= int(raw) <= MAX_DEBOUNCING_WINDOW_MS:
        raise errors.INVALID_DEBOUNCING_WINDOW()
    return int(raw)


def identity(raw: str) -> str:
    if not raw or len(raw) > 256:
        raise errors.INVALID_IDENTITY()
    return raw


@dataclass(frozen=True)
class Paging:
    size: int
    page: int
    cursor: Cursor | None
    token: str | None


def paging_params(request: Request) -> Paging:
    q = request.query_params
    raw_size = q.get("PageSize", "50")
    if not limits.is_count(raw_size):
        raise InvalidInputError("page_size", raw_size)
    limits.check_page_size(int(raw_size))
    raw_page = q.get("Page", "0")
    if not limits.is_count(raw_page):
        raise errors.INVALID_PARAMETER("Invalid Page: must be a non-negative integer")
    token = q.get("PageToken") or None
    try:
        cursor = paging.decode(token) if token else None
    except InvalidInputError:
        raise errors.INVALID_PAGE_TOKEN() from None
    return Paging(int(raw_size), int(raw_page), cursor, token)


def order(request: Request) -> str:
    value = request.query_params.get("Order", "asc")
    if value not in ("asc", "desc"):
        raise errors.INVALID_ORDER()
    return value


def bounds(request: Request) -> str:
    value = request.query_params.get("Bounds", "inclusive")
    if value not in ("inclusive", "exclusive"):
        raise errors.INVALID_BOUNDS()
    return value
