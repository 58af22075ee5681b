"""X-Twilio-Signature (realtime/webhooks/signing.py) against Twilio's own RequestValidator."""

from __future__ import annotations

import pytest
from twilio.request_validator import RequestValidator

from realtime.webhooks.signing import signature

TOKEN = "12345"


def test_twilios_documented_example() -> None:
    """The worked example of Twilio's webhook-security page: token 12345, this URL and these parameters."""
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    assert signature(TOKEN, url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("https://example.com/hook", {}),
        ("https://example.com/hook?x=1&y=%C3%A9", {"EventType": "document_updated", "DocumentData": '{"a":"é"}'}),
        ("http://127.0.0.1:8123/hook", {"B": "", "A": "2", "a": "1", "AccountSid": "AC" + "0" * 32}),
        ("https://user:pass@example.com/a%20b?q", {"ItemData": '{"emoji":"😀","nl":"\\n"}', "Identity": "système"}),
    ],
)
def test_matches_twilios_request_validator(url: str, params: dict[str, str]) -> None:
    validator = RequestValidator(TOKEN)
    assert signature(TOKEN, url, params) == validator.compute_signature(url, params)
    assert validator.validate(url, params, signature(TOKEN, url, params))


def test_the_token_the_url_and_every_parameter_are_signed() -> None:
    url, params = "https://example.com/hook", {"EventType": "list_created", "ListSid": "ES1"}
    validator = RequestValidator(TOKEN)
    good = signature(TOKEN, url, params)
    assert not validator.validate(url, params, signature("other-token", url, params))
    assert not validator.validate(url + "?x=1", params, good)
    assert not validator.validate(url, {**params, "ListSid": "ES2"}, good)
    assert not validator.validate(url, {**params, "Extra": ""}, good)
