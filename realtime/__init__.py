"""Delivery of change events to the outside: the twilsock/CDS WebSocket gateway for Twilio's
twilio-sync SDK (gateway.py, session.py, hub.py, cds.py …) and the webhook worker. Everything here
reads what storage recorded; nothing here writes an event itself."""

__all__: list[str] = []
