"""The admin console at ``/console``: a static page that calls the REST API (/v1) with the caller's
Basic credentials, plus a few read-mostly endpoints under ``/console/api`` that the REST API has no
answer for (live events, webhook queues, connections), authenticated exactly like REST."""

from __future__ import annotations

from .routes import end_streams, routes

__all__ = ["end_streams", "routes"]
