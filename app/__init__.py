"""The HTTP edge: Twilio Sync v1 REST handlers and the server command."""

from .main import create_app

__all__ = ["create_app"]
