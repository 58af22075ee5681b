"""Every knob of the server, read once from the environment (and CLI flags) into a frozen object.

Each one is documented in the README's Settings table; keep the two in step.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"  # SYNC_HOST
    port: int = 8080  # SYNC_PORT
    redis_url: str | None = None  # REDIS_URL; unset = start the embedded Valkey
    redis_cluster: bool = False  # REDIS_CLUSTER
    data_dir: str = "./data"  # SYNC_DATA_DIR
    public_url: str | None = None  # SYNC_PUBLIC_URL; unset = derived from each request
    log_level: str = "info"  # SYNC_LOG_LEVEL
    workers: int = 1  # SYNC_WORKERS
    account_sid: str | None = None  # TWILIO_ACCOUNT_SID
    auth_token: str | None = field(default=None, repr=False)  # TWILIO_AUTH_TOKEN
    event_log_max: int = 1000  # SYNC_EVENT_LOG_MAX
    event_log_keep_s: int = 86400  # SYNC_EVENT_LOG_KEEP_S
    sweep_interval_s: float = 1.0  # SYNC_SWEEP_INTERVAL_S
    appendfsync: str = "everysec"  # SYNC_REDIS_APPENDFSYNC (embedded Valkey only)
    redis_port: int = 0  # SYNC_REDIS_PORT (embedded Valkey only; 0 = a free port)
    auth_cache_s: float = 5.0  # SYNC_AUTH_CACHE_S
    webhooks: bool = True  # SYNC_WEBHOOKS: run the webhook delivery worker in this process
    webhook_connect_timeout_s: float = 5.0  # SYNC_WEBHOOK_CONNECT_TIMEOUT_S (Twilio's default)
    webhook_read_timeout_s: float = 15.0  # SYNC_WEBHOOK_READ_TIMEOUT_S (Twilio's default)
    webhook_max_retries: int = 5  # SYNC_WEBHOOK_MAX_RETRIES, after the first attempt
    webhook_backoff_base_s: float = 1.0  # SYNC_WEBHOOK_BACKOFF_BASE_S, doubled per retry
    webhook_backoff_max_s: float = 60.0  # SYNC_WEBHOOK_BACKOFF_MAX_S
    webhook_concurrency: int = 200  # SYNC_WEBHOOK_CONCURRENCY, requests in flight per process
    webhook_service_concurrency: int = 8  # SYNC_WEBHOOK_SERVICE_CONCURRENCY, per Service
    webhook_lease_ms: int = 10000  # SYNC_WEBHOOK_LEASE_MS, a crashed worker's Services move after this
    webhook_scan_interval_s: float = 2.0  # SYNC_WEBHOOK_SCAN_INTERVAL_S, safety net for missed wake-ups
    webhook_dead_letter_max: int = 10000  # SYNC_WEBHOOK_DEAD_LETTER_MAX, per Service
    webhook_allow_networks: str = ""  # SYNC_WEBHOOK_ALLOW_NETWORKS, CIDRs, comma-separated; empty = all
    webhook_deny_networks: str | None = None  # SYNC_WEBHOOK_DENY_NETWORKS; unset = link-local etc.
    ws_max_connections: int = 10000  # SYNC_WS_MAX_CONNECTIONS, WebSocket connections per process
    ws_max_frame_bytes: int = 262144  # SYNC_WS_MAX_FRAME_BYTES, largest twilsock frame accepted
    ws_queue_frames: int = 2000  # SYNC_WS_QUEUE_FRAMES, per-connection send queue (overflow: close 308)
    ws_subscriptions: int = 2000  # SYNC_WS_SUBSCRIPTIONS, per connection (54419 beyond)
    ws_token_warn_s: int = 180  # SYNC_WS_TOKEN_WARN_S, token_about_to_expire this long before expiry
    ws_ping_s: float = 20.0  # SYNC_WS_PING_S, WebSocket ping interval (and pong timeout)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        names = {
            "host": "SYNC_HOST",
            "port": "SYNC_PORT",
            "redis_url": "REDIS_URL",
            "redis_cluster": "REDIS_CLUSTER",
            "data_dir": "SYNC_DATA_DIR",
            "public_url": "SYNC_PUBLIC_URL",
            "log_level": "SYNC_LOG_LEVEL",
            "workers": "SYNC_WORKERS",
            "account_sid": "TWILIO_ACCOUNT_SID",
            "auth_token": "TWILIO_AUTH_TOKEN",
            "event_log_max": "SYNC_EVENT_LOG_MAX",
            "event_log_keep_s": "SYNC_EVENT_LOG_KEEP_S",
            "sweep_interval_s": "SYNC_SWEEP_INTERVAL_S",
            "appendfsync": "SYNC_REDIS_APPENDFSYNC",
            "redis_port": "SYNC_REDIS_PORT",
            "auth_cache_s": "SYNC_AUTH_CACHE_S",
            "webhooks": "SYNC_WEBHOOKS",
            **{name: "SYNC_" + name.upper() for name in _WEBHOOK_KNOBS},
            **{f.name: "SYNC_" + f.name.upper() for f in fields(cls) if f.name.startswith("ws_")},
        }
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, var in names.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[name] = _convert(var, raw, str(types[name]))
        settings = cls(**values)
        overrides = {k: v for k, v in overrides.items() if v is not None}
        settings = replace(settings, **overrides)
        settings.validate()
        return settings

    def validate(self) -> None:
        if bool(self.account_sid) != bool(self.auth_token):
            raise ValueError("set both TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, or neither")
        if self.appendfsync not in ("always", "everysec", "no"):
            raise ValueError("SYNC_REDIS_APPENDFSYNC must be always, everysec or no")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ValueError("SYNC_PUBLIC_URL must start with http:// or https://")
        for var, value in (("ALLOW", self.webhook_allow_networks), ("DENY", self.webhook_deny_networks or "")):
            for net in networks(value):
                try:
                    ipaddress.ip_network(net, strict=False)
                except ValueError:
                    raise ValueError(f"SYNC_WEBHOOK_{var}_NETWORKS: {net!r} is not a network (CIDR)") from None


def networks(value: str) -> tuple[str, ...]:
    """A comma-separated list of CIDRs as a tuple (empty entries dropped)."""
    return tuple(n.strip() for n in value.split(",") if n.strip())


_WEBHOOK_KNOBS = [f.name for f in fields(Settings) if f.name.startswith("webhook_")]


def _convert(var: str, raw: str, typ: str) -> Any:
    try:
        if typ.startswith("int"):
            return int(raw)
        if typ.startswith("float"):
            return float(raw)
        if typ.startswith("bool"):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
    except ValueError:
        raise ValueError(f"{var}={raw!r} is not a valid {typ.split(' ')[0]}") from None
    return raw
