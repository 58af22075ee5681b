"""app/idempotency.py's pure parts: what counts as the same request, and where its record lives."""

from __future__ import annotations

from app.idempotency import fingerprint, record_key

FORM = "application/x-www-form-urlencoded"
SVC = "IS" + "a" * 32


def test_form_fields_in_another_order_are_the_same_request() -> None:
    one = fingerprint("POST", "/v1/Services", b"", FORM, b"A=1&B=2")
    assert one == fingerprint("POST", "/v1/Services", b"", FORM, b"B=2&A=1")
    assert one != fingerprint("POST", "/v1/Services", b"", FORM, b"A=1&B=3")
    assert one != fingerprint("DELETE", "/v1/Services", b"", FORM, b"A=1&B=2")
    assert one != fingerprint("POST", "/v1/Services/x", b"", FORM, b"A=1&B=2")
    assert one != fingerprint("POST", "/v1/Services", b"q=1", FORM, b"A=1&B=2")


def test_other_bodies_count_byte_for_byte() -> None:
    assert fingerprint("POST", "/p", b"", "text/plain", b"A=1&B=2") != fingerprint(
        "POST", "/p", b"", "text/plain", b"B=2&A=1"
    )


def test_writes_inside_a_service_are_recorded_in_its_slot_and_others_in_the_account() -> None:
    ac = "AC" + "b" * 32
    assert record_key(f"/v1/Services/{SVC}/Documents", ac, "k") == (SVC, f"sync:{{{SVC}}}:ik:{ac}:k")
    assert record_key(f"/v1/Services/{SVC}", ac, "k") == ("", f"sync:{{{ac}}}:ik:k")
    assert record_key("/v1/Services", ac, "k") == ("", f"sync:{{{ac}}}:ik:k")
