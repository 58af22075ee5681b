"""app/params.py: Twilio's wire parameters parsed from real starlette Requests (no server).

A refusal is checked as the REST answer it becomes: (HTTP status, Twilio code), through the wire's
error table (storage/wire/errors.py), whether the parser raised a Twilio error or a storage error.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, strategies as st
from starlette.requests import Request

from app import params
from storage import Kind, paging
from storage.errors import StoreError
from storage.limits import MAX_DATA, MAX_TTL
from storage.wire.errors import TwilioError, from_store_error


def request(
    method: str = "POST", body: bytes = b"", content_type: str | None = None, query: str = "", **headers: str
) -> Request:
    """A starlette Request as uvicorn would hand it over, reading ``body`` from a receive callable."""
    raw = [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]
    if content_type is not None:
        raw.append((b"content-type", content_type.encode()))
    raw.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "method": method, "path": "/", "query_string": query.encode(), "headers": raw}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


def form_request(fields: dict[str, str] | list[tuple[str, str]]) -> Request:
    return request(body=urlencode(fields).encode(), content_type="application/x-www-form-urlencoded")


def refusal(call: Callable[[], Any]) -> tuple[int, int]:
    """The (HTTP status, Twilio code) that ``call`` is refused with."""
    try:
        call()
    except TwilioError as exc:
        return exc.status, exc.code
    except StoreError as exc:
        answer = from_store_error(exc, "rest", "/")
        return answer.status, answer.code
    raise AssertionError("accepted")


async def async_refusal(call: Callable[[], Awaitable[Any]]) -> tuple[int, int]:
    try:
        await call()
    except TwilioError as exc:
        return exc.status, exc.code
    raise AssertionError("accepted")


# -- form bodies ------------------------------------------------------------------------------------


async def test_urlencoded_form_keeps_blank_values_and_decodes_percent_escapes() -> None:
    form = await params.form(form_request([("Data", '{"a":"é & ="}'), ("Ttl", ""), ("UniqueName", "a+b c")]))
    assert form["Data"] == '{"a":"é & ="}' and form["Ttl"] == "" and form["UniqueName"] == "a+b c"


@given(st.dictionaries(st.text(min_size=1), st.text(), max_size=5))
async def test_any_urlencoded_fields_read_back_as_sent(fields: dict[str, str]) -> None:
    form = await params.form(form_request(fields))
    assert dict(form) == fields


async def test_form_with_a_charset_parameter_is_parsed() -> None:
    r = request(body=b"A=1", content_type="application/x-www-form-urlencoded; charset=utf-8")
    assert (await params.form(r))["A"] == "1"


async def test_multipart_form_is_parsed() -> None:
    body = b'--XX\r\nContent-Disposition: form-data; name="Data"\r\n\r\n{"a":1}\r\n--XX--\r\n'
    form = await params.form(request(body=body, content_type="multipart/form-data; boundary=XX"))
    assert form["Data"] == '{"a":1}'


async def test_malformed_multipart_is_400_20001() -> None:
    bad = request(body=b"garbage", content_type="multipart/form-data")  # no boundary
    assert await async_refusal(lambda: params.form(bad)) == (400, 20001)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_get_and_delete_have_no_form(method: str) -> None:
    assert not await params.form(request(method, b"A=1", "application/x-www-form-urlencoded"))


@pytest.mark.parametrize("ctype", [None, "application/json", "text/plain"])
async def test_other_content_types_are_ignored_as_twilio_ignores_them(ctype: str | None) -> None:
    assert not await params.form(request(body=b'{"Data": "{}"}', content_type=ctype))


async def test_body_over_256_kib_is_refused_before_reading() -> None:
    big = request(body=b"A=" + b"x" * params.MAX_BODY, content_type="application/x-www-form-urlencoded")
    assert await async_refusal(lambda: params.form(big)) == (413, 54006)


@pytest.mark.parametrize("ctype", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=b"])
async def test_a_body_without_content_length_is_refused_once_past_256_kib_and_read_no_further(ctype: str) -> None:
    """Chunked framing has no Content-Length: the body is read only until it passes the limit."""
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        head = b'--b\r\nContent-Disposition: form-data; name="A"\r\n\r\n' if received == 1 else b""
        return {"type": "http.request", "body": head + b"A" * 65536, "more_body": received < 1000}  # 64 MiB

    headers = [(b"content-type", ctype.encode())]
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": headers}
    assert await async_refusal(lambda: params.form(Request(scope, receive))) == (413, 54006)
    assert received <= params.MAX_BODY // 65536 + 1  # up to the first chunk past the limit, no more


# -- Data -------------------------------------------------------------------------------------------


@given(st.dictionaries(st.text(), st.integers() | st.text() | st.booleans() | st.none(), max_size=8))
def test_any_json_object_is_accepted_as_compact_json(value: dict[str, Any]) -> None:
    text = params.data({"Data": json.dumps(value, indent=2)}, Kind.DOCUMENT, required=True)
    assert text is not None and json.loads(text) == value
    assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize(("target", "code"), [(Kind.DOCUMENT, 54101), (Kind.LIST, 54156), (Kind.MAP, 54206)])
def test_absent_data_is_none_or_the_targets_missing_code(target: Kind, code: int) -> None:
    assert params.data({}, target, required=False) is None
    assert refusal(lambda: params.data({}, target, required=True)) == (400, code)


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"text"', "1", "null", '{"a": NaN}', '{"a": -Infinity}', ""])
def test_data_that_is_not_a_json_object_is_400_54008(raw: str) -> None:
    assert refusal(lambda: params.data({"Data": raw}, Kind.DOCUMENT, required=True)) == (400, 54008)


def test_data_over_the_limit_is_413_54006() -> None:
    overhead = len('{"k":""}')
    exact = json.dumps({"k": "x" * (MAX_DATA - overhead)})
    assert params.data({"Data": exact}, Kind.DOCUMENT, required=True) is not None
    over = json.dumps({"k": "x" * (MAX_DATA - overhead + 1)})
    assert refusal(lambda: params.data({"Data": over}, Kind.DOCUMENT, required=True)) == (413, 54006)
    assert refusal(lambda: params.data({"Data": '{"k":"xx"}'}, Kind.DOCUMENT, required=True, limit=8)) == (413, 54006)


def test_deeply_nested_data_is_400_54008() -> None:
    assert refusal(lambda: params.data({"Data": "[" * 100_000}, Kind.DOCUMENT, required=True)) == (400, 54008)


@pytest.mark.parametrize("raw", ['{"a":"\\ud800"}', '{"\\udfff":1}', '{"a":' + "[" * 500 + "]" * 500 + "}"])
def test_data_with_a_lone_surrogate_or_nested_too_deep_is_400_54008(raw: str) -> None:
    assert refusal(lambda: params.data({"Data": raw}, Kind.DOCUMENT, required=True)) == (400, 54008)


# -- TTLs and names ---------------------------------------------------------------------------------


def test_ttl_takes_the_first_parameter_given_and_ignores_its_aliases() -> None:
    assert params.ttl({"ItemTtl": "5", "Ttl": "9"}, "ItemTtl", "Ttl") == 5
    assert params.ttl({"ItemTtl": "", "Ttl": "9"}, "ItemTtl", "Ttl") == 9
    assert params.ttl({"Ttl": "0"}, "ItemTtl", "Ttl") == 0
    assert params.ttl({}, "Ttl") is None
    assert params.ttl({"Ttl": str(MAX_TTL)}, "Ttl") == MAX_TTL
    assert params.ttl({"ItemTtl": "5", "Ttl": "x"}, "ItemTtl", "Ttl") == 5  # an ignored alias is not checked


@pytest.mark.parametrize("raw", ["-5", "1.5", "x", "²", "١", " 5", str(MAX_TTL + 1)])
def test_ttl_that_is_not_0_to_a_year_in_ascii_digits_is_400_54011(raw: str) -> None:
    assert refusal(lambda: params.ttl({"CollectionTtl": raw}, "CollectionTtl", "Ttl")) == (400, 54011)
    try:
        params.ttl({"CollectionTtl": raw}, "CollectionTtl", "Ttl")
    except StoreError as exc:
        assert exc.ident == "CollectionTtl"  # the message names the parameter that was sent


def test_unique_name() -> None:
    assert params.unique_name({}) is None
    assert params.unique_name({"UniqueName": "x" * 320}) == "x" * 320
    for bad in ("", "x" * 321, "ET" + "0" * 32):
        assert refusal(lambda bad=bad: params.unique_name({"UniqueName": bad})) == (400, 54302)


def test_map_key() -> None:
    assert params.key("a/b ?") == "a/b ?"
    for bad in (None, "", "k" * 321):
        assert refusal(lambda bad=bad: params.key(bad)) == (400, 54209)


@pytest.mark.parametrize(
    ("raw", "index"), [("0", "0"), ("007", "7"), ("123", "123"), ("0" * 5000 + "1", "1"), (str(2**63 - 1),) * 2]
)
def test_list_index_is_canonical(raw: str, index: str) -> None:
    assert params.index(raw) == index


@pytest.mark.parametrize("raw", ["-1", "1.0", "x", "", "²", "1e3", "1" * 5000, str(2**63)])
def test_list_index_that_is_not_a_non_negative_integer_is_400_54458(raw: str) -> None:
    assert refusal(lambda: params.index(raw)) == (400, 54458)


def test_identity_is_1_to_256_characters() -> None:
    assert params.identity("ünï a+b") == "ünï a+b" and params.identity("i" * 256) == "i" * 256
    for bad in ("", "i" * 257):
        assert refusal(lambda bad=bad: params.identity(bad)) == (400, 54351)


# -- headers and Service flags ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "revision"),
    [
        (None, None),
        ("", None),
        ("a", "a"),
        ('"1f"', "1f"),
        ('W/"b"', "b"),
        ("-1", "-1"),
        ("0123456789abcdef", "0123456789abcdef"),
    ],
)
def test_if_match_accepts_quoted_and_weak_revisions(header: str | None, revision: str | None) -> None:
    r = request("POST") if header is None else request("POST", if_match=header)
    assert params.if_match(r) == revision


@pytest.mark.parametrize("header", ["not-a-rev", "A", "0123456789abcdef0", "*"])
def test_if_match_that_is_not_a_revision_is_400_54003(header: str) -> None:
    assert refusal(lambda: params.if_match(request("POST", if_match=header))) == (400, 54003)


def test_boolean_is_true_or_false_in_any_case() -> None:
    assert params.boolean({"A": "True"}, "A") is True and params.boolean({"A": "FALSE"}, "A") is False
    assert params.boolean({}, "A") is None
    for bad in ("1", "yes", ""):
        assert refusal(lambda bad=bad: params.boolean({"A": bad}, "A")) == (400, 20001)


def test_friendly_name_is_1_to_255_characters() -> None:
    assert params.friendly_name({}) is None and params.friendly_name({"FriendlyName": "n" * 255}) == "n" * 255
    for bad in ("", "n" * 256):
        assert refusal(lambda bad=bad: params.friendly_name({"FriendlyName": bad})) == (400, 54053)


def test_webhook_url_is_an_absolute_http_url_of_at_most_512_characters() -> None:
    assert params.webhook_url({}) is None and params.webhook_url({"WebhookUrl": ""}) is None
    ok = "https://example.com/" + "p" * 492
    assert params.webhook_url({"WebhookUrl": ok}) == ok
    for bad in ("ftp://example.com/", "/relative", "http://", ok + "p", "example.com"):
        assert refusal(lambda bad=bad: params.webhook_url({"WebhookUrl": bad})) == (400, 54051)


def test_debouncing_window_is_1000_to_30000_ms() -> None:
    assert params.debouncing_window({}) is None
    assert params.debouncing_window({"ReachabilityDebouncingWindow": "1000"}) == 1000
    assert params.debouncing_window({"ReachabilityDebouncingWindow": "30000"}) == 30000
    for bad in ("999", "30001", "x", "-1000"):
        assert refusal(lambda bad=bad: params.debouncing_window({"ReachabilityDebouncingWindow": bad})) == (400, 54052)


# -- query parameters -------------------------------------------------------------------------------


def test_paging_defaults_and_a_token_round_trip() -> None:
    assert params.paging_params(request("GET")) == params.Paging(50, 0, None, None)
    token = paging.encode(paging.Cursor("k", forward=False))
    got = params.paging_params(request("GET", query=f"PageSize=1000&Page=3&PageToken={token}"))
    assert got == params.Paging(1000, 3, paging.Cursor("k", forward=False), token)


@pytest.mark.parametrize(
    ("query", "answer"),
    [
        ("PageSize=0", (400, 54454)),
        ("PageSize=1001", (400, 54454)),
        ("PageSize=x", (400, 54454)),
        ("Page=-1", (400, 20001)),
        ("PageToken=%25%25%25", (400, 54453)),
    ],
)
def test_bad_paging_parameters(query: str, answer: tuple[int, int]) -> None:
    assert refusal(lambda: params.paging_params(request("GET", query=query))) == answer


def test_order_and_bounds() -> None:
    assert params.order(request("GET")) == "asc" and params.order(request("GET", query="Order=desc")) == "desc"
    assert params.bounds(request("GET")) == "inclusive"
    assert params.bounds(request("GET", query="Bounds=exclusive")) == "exclusive"
    assert refusal(lambda: params.order(request("GET", query="Order=DESC"))) == (400, 54451)
    assert refusal(lambda: params.bounds(request("GET", query="Bounds=open"))) == (400, 54452)


def test_webhook_url_refuses_what_cannot_be_sent_as_written() -> None:
    """Twilio signs the URL as configured, so the URL stored must be the one sent: no whitespace, no
    control or non-ASCII characters (percent-encode them), and a host and port that parse."""
    for good in ("http://127.0.0.1:9/a%20b", "https://[::1]:8443/h?x=%C3%A9", "https://u:p@example.com/h#f"):
        assert params.webhook_url({"WebhookUrl": good}) == good
    bad_urls = [
        "http://127.0.0.1:9/a b",
        "http://127.0.0.1:9/a\tb",
        " http://example.com/",
        "http://example.com/\n",
        "http://example.com/a\x01b",
        "http://example.com/a\x7fb",
        "http://example.com/caf\u00e9",
        "http://h\u00e9.example.com/",
        "http://example.com:99999/",
        "http://example.com:port/",
        "http://[::1/",
        "http://[nothex]/",
        "http://:80/",
        "http://user@/",
        "http://exa<mple.com/",
    ]
    for bad in bad_urls:
        assert refusal(lambda bad=bad: params.webhook_url({"WebhookUrl": bad})) == (400, 54051), bad


_FORM_PIECES = list('ab=&+%\\x 09afAFgzG"{}:,é✓\x00') + ["%C3", "%A9", "%e2%9c%93", "%2", "%%", "%41", "\\%41"]
_FORM_TEXT = st.lists(st.sampled_from(_FORM_PIECES), max_size=40).map("".join)


@given(st.one_of(_FORM_TEXT, st.text(max_size=40)))
def test_the_form_parser_answers_what_parse_qsl_does(body: str) -> None:
    """parse_form's unquoting (the unicode_escape codec on ASCII) against the standard library's,
    on text dense with escapes, broken escapes, backslashes, '+' and non-ASCII."""
    from urllib.parse import parse_qsl

    assert params.parse_form(body) == parse_qsl(body, keep_blank_values=True)


def test_the_form_parser_reads_a_json_data_body_as_parse_qsl() -> None:
    from urllib.parse import parse_qsl

    body = urlencode({"Data": json.dumps({"t": 1.5, "s": 'a\\b "q" é ✓ %41'}), "Ttl": "0", "Empty": ""})
    assert params.parse_form(body) == parse_qsl(body, keep_blank_values=True)
    assert dict(params.parse_form(body))["Data"] == json.dumps({"t": 1.5, "s": 'a\\b "q" é ✓ %41'})
