"""X-Twilio-Signature, computed exactly as Twilio computes it (a pure function, no I/O).

Algorithm (twilio.com/docs/usage/webhooks/webhooks-security; twilio-python ``RequestValidator``):
the full URL as configured (query string included), then for each form parameter name in sorted
order its name and value appended; HMAC-SHA1 over that UTF-8 string keyed with the account's auth
token; Base64 of the digest. Repeated names append each value, values sorted (we send none).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The ``X-Twilio-Signature`` header value for a form POST of ``params`` to ``url``."""
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()
