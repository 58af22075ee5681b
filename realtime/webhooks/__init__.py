"""Webhook delivery, a room of its own beside the WebSocket gateway: it never touches a socket of it.

worker.py drains the durable per-Service queues (storage/webhooks.py) with retries and dead letters;
client.py is the guarded HTTP client; policy.py decides which networks may be reached; signing.py
computes X-Twilio-Signature; params.py turns a stored change event into Twilio's form parameters.
This package imports only storage (and its own modules), never the gateway's, and the gateway never
imports it: app/main.py wires both.
"""

from .worker import WebhookOptions, WebhookWorker

__all__ = ["WebhookOptions", "WebhookWorker"]
