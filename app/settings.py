"""Every knob of the server, read once from the environment (and CLI flags) into a frozen object.

Each one is documented in the README's Settings table; keep the two in step.
"""

from __future__ import annotations

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
