"""Every knob of the server, declared once: type, default, environment variable and one line of doc.

Each field of ``Settings`` is the whole declaration of a setting. Its environment variable is
``SYNC_<FIELD>`` unless the field names another (``validation_alias``: ``REDIS_*``, ``TWILIO_*``);
its CLI flag is ``--<field-with-dashes>`` (app/flags.py); its description is the flag's help. The
README's Settings table documents the same names and defaults, and tests/unit/test_settings.py fails
when the two disagree. pydantic-settings reads the environment and validates; this module keeps the
rules the server has always had on top of it: an empty variable counts as unset, booleans are
1/0/true/false/yes/no, and every error is one line naming the variable (or flag) at fault.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from storage import Durability, StoreConfig


def _yes_no(value: Any) -> Any:
    """Booleans as the environment writes them: 1/0/true/false/yes/no, any case (nothing else)."""
    if isinstance(value, str):
        word = value.lower()
        if word not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"{value!r} is not a valid bool")
        return word in ("1", "true", "yes")
    return value


def _comma_list(value: Any) -> Any:
    """A comma-separated list as a tuple (blank entries dropped), as variables and flags give it."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


YesNo = Annotated[bool, BeforeValidator(_yes_no)]
# NoDecode: a list is "a,b", never JSON, in the environment.
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]

# Cloud metadata (169.254.169.254) and unroutable ranges: never a webhook's destination.
DENY_NETWORKS = ("0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "::/128", "fe80::/10", "ff00::/8")


class Settings(BaseSettings):
    """Immutable; built by ``from_env`` (environment, then flags on top)."""

    model_config = SettingsConfigDict(
        alias_generator=lambda name: "SYNC_" + name.upper(),
        case_sensitive=True,  # exactly the documented names, as os.environ always was read
        env_ignore_empty=True,  # SYNC_X= means unset
        frozen=True,
        extra="forbid",
    )

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 for all interfaces)")
    port: int = Field(8080, description="port to listen on")
    workers: int = Field(1, description="uvicorn worker processes; all share one Redis")
    worker_start_s: int = Field(
        30,
        ge=1,
        description="with several workers: how long one may take to answer its supervisor's health check"
        " (starting included) before it is killed and restarted",
    )
    http_head_timeout_s: float = Field(
        10.0, gt=0, description="a request head not complete this long after it began: connection closed"
    )
    http_body_timeout_s: float = Field(
        30.0, gt=0, description="a request body that makes no progress this long: 408, connection closed"
    )
    http_max_header_bytes: int = Field(
        32768, ge=1024, description="largest request head (request line and headers; beyond: 431)"
    )
    http_max_headers: int = Field(100, ge=1, description="most header fields in a request (beyond: 431)")
    redis_url: str | None = Field(
        None, validation_alias="REDIS_URL", description="redis://host:port/db of an external Redis/Valkey (7.0+)"
    )
    redis_cluster: YesNo = Field(
        False, validation_alias="REDIS_CLUSTER", description="connect to REDIS_URL as a Redis Cluster"
    )
    data_dir: str = Field("./data", description="where the embedded Valkey keeps its data and AOF (<dir>/redis)")
    redis_port: int = Field(0, description="port of the embedded Valkey on 127.0.0.1 (0: a free port)")
    redis_appendfsync: Literal["always", "everysec", "no"] = Field(
        "always",
        description="embedded Valkey's appendfsync: always (nothing leaves Valkey before its fsync), everysec, no",
    )
    redis_timeout_s: float = Field(
        5.0, gt=0, description="longest wait for one Redis reply or connection (then 503/20503, not a hang)"
    )
    redis_multiplex: YesNo = Field(
        True,
        description="write scripts and the subscriptions' reads share one pipelined connection per process, "
        "one per master on a Cluster (redis:// over TCP; off: redis-py's connection pool, as other reads)",
    )
    redis_startup_wait_s: float = Field(
        60.0,
        ge=0,
        description="how long serve retries when Redis does not answer at start (a Cluster master being "
        "replaced included), then exits with one line (0: at once)",
    )
    durability: Literal["local", "fsync", "replica"] = Field(
        "local", description="when a write is acknowledged: local (primary), fsync (primary's AOF fsynced), replica"
    )
    durability_timeout_ms: int = Field(
        1000, gt=0, description="longest wait for fsync/replica durability (then 503/20503: the write may stand)"
    )
    public_url: str | None = Field(
        None, description="base URL of every url, links and meta field (unset: each request's scheme and Host)"
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="every log line, uvicorn's included: text, or json (one object a line)"
    )
    drain_s: float = Field(
        5.0, ge=0, description="on SIGTERM: /readyz answers 503 and REST is still served this long, then shutdown"
    )
    log_level: str = Field("info", description="debug (adds access logs), info, warning, error")
    metrics: YesNo = Field(True, description="serve /metrics (Prometheus) and count what it reports")
    metrics_token: str | None = Field(
        None, repr=False, description="bearer token /metrics requires (unset: open on a loopback bind only)"
    )
    account_sid: str | None = Field(
        None, validation_alias="TWILIO_ACCOUNT_SID", description="the account to serve (with its auth token)"
    )
    auth_token: str | None = Field(
        None, validation_alias="TWILIO_AUTH_TOKEN", repr=False, description="the account's auth token"
    )
    event_log_max: int = Field(1000, description="change events kept per object (realtime catch-up, webhooks)")
    event_log_keep_s: int = Field(86400, description="how long a deleted object's event log is kept")
    history_keep: int = Field(100, description="revisions kept per Document, List item and Map item (0: history off)")
    history_max_age_s: int = Field(
        0, description="a revision superseded longer ago is dropped at the next write (0: no limit)"
    )
    sweep_interval_s: float = Field(1.0, description="how often the expiry sweeper looks for expired data")
    auth_cache_s: float = Field(5.0, description="how long a process trusts checked credentials")
    idempotency_ttl_s: int = Field(
        86400, ge=1, description="how long a write's answer is kept under its Idempotency-Key (retries replay it)"
    )
    webhooks: YesNo = Field(True, description="run the webhook delivery worker in this process")
    webhook_connect_timeout_s: float = Field(5.0, description="DNS + TCP + TLS timeout per delivery")
    webhook_read_timeout_s: float = Field(15.0, description="time for the receiver's whole response")
    webhook_max_retries: int = Field(5, description="retries after the first attempt, then the dead letters")
    webhook_backoff_base_s: float = Field(1.0, description="backoff before the first retry, doubled per retry")
    webhook_backoff_max_s: float = Field(60.0, description="longest backoff between retries")
    webhook_concurrency: int = Field(200, description="webhook requests in flight per process, all Services")
    webhook_service_concurrency: int = Field(8, description="webhook requests in flight for one Service")
    webhook_lease_ms: int = Field(10000, description="a crashed process's Services are taken over after this")
    webhook_scan_interval_s: float = Field(2.0, description="how often queues nobody drains are looked for")
    webhook_dead_letter_max: int = Field(10000, description="dead letters kept per Service (oldest dropped)")
    webhook_allow_networks: CommaList = Field((), description="CIDRs webhooks may reach (empty: all not denied)")
    webhook_deny_networks: CommaList = Field(
        DENY_NETWORKS, description="CIDRs webhooks may never reach (wins over allow)"
    )
    ws_max_connections: int = Field(10000, description="WebSocket connections per process")
    ws_max_frame_bytes: int = Field(262144, description="largest twilsock frame accepted (larger: close 406)")
    ws_queue_frames: int = Field(
        2000, description="collection frames sent while a socket is backed up (beyond: close 308)"
    )
    ws_ack_window: int = Field(
        128, ge=0, description="object events a client that acknowledges may leave unacknowledged (beyond: conflated)"
    )
    ws_max_inflight: int = Field(32, ge=1, description="tunnelled requests in flight per connection (beyond: not read)")
    ws_subscriptions: int = Field(2000, description="subscriptions per connection (beyond: 54419)")
    ws_token_warn_s: int = Field(180, description="token_about_to_expire is sent this long before expiry")
    ws_ping_s: float = Field(20.0, description="WebSocket ping interval and pong timeout")
    ws_compression: YesNo = Field(
        False, description="negotiate permessage-deflate (each connection then compresses its own frames)"
    )

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """The environment's settings with ``overrides`` (by field name; None or "" = not given) on top.

        An empty flag is unset, like an empty variable, so ``to_env`` round-trips what flags set.
        Raises ValueError with a one-line message naming the variable, or the flag, at fault.
        """
        given = {name: value for name, value in overrides.items() if value is not None and value != ""}
        try:
            return cls(**{env_name(name): value for name, value in given.items()})
        except ValidationError as exc:
            raise ValueError(_one_line(exc, flags=set(given))) from None

    def store_config(self) -> StoreConfig:
        """What the store does on every write (event log, history, durability), from these settings:
        the same for ``serve``'s start-up checks and for each worker."""
        return StoreConfig(
            self.event_log_max,
            self.event_log_keep_s,
            durability=Durability(self.durability, self.durability_timeout_ms),
            history_keep=self.history_keep,
            history_max_age_s=self.history_max_age_s,
            multiplex=self.redis_multiplex,
        )

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` in another process (a uvicorn worker) equal this."""
        env = {}
        for name in type(self).model_fields:
            text = render(getattr(self, name))
            if text is not None:
                env[env_name(name)] = text
        return env

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url and not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} does not start with http:// or https://")
        return url

    @field_validator("webhook_allow_networks", "webhook_deny_networks")
    @classmethod
    def _cidrs(cls, nets: tuple[str, ...]) -> tuple[str, ...]:
        for net in nets:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not a network (CIDR)") from None
        return nets

    @model_validator(mode="after")
    def _account_pair(self) -> Settings:
        if bool(self.account_sid) != bool(self.auth_token):
            raise ValueError("set both TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, or neither")
        return self

    @model_validator(mode="after")
    def _cluster_over_tcp(self) -> Settings:
        # the Cluster's realtime subscribers (realtime/pubsub.py) speak plain TCP to every node:
        # refused here, in one line, rather than a start-up that cannot reach the nodes
        if self.redis_cluster and self.redis_url and not self.redis_url.startswith("redis://"):
            raise ValueError(
                "REDIS_CLUSTER needs a redis:// REDIS_URL (TLS and Unix sockets are not supported on a Cluster)"
            )
        return self


def env_name(name: str) -> str:
    """The environment variable of the setting ``name`` (a field of Settings)."""
    field = Settings.model_fields[name]
    alias = field.validation_alias or field.alias
    assert isinstance(alias, str)
    return alias


def render(value: Any) -> str | None:
    """A setting's value as the environment (and the README) writes it; None = unset."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def _one_line(exc: ValidationError, flags: set[str]) -> str:
    by_env = {env_name(name): name for name in Settings.model_fields}
    return "; ".join(_message(error, by_env, flags) for error in exc.errors())


def _message(error: ErrorDetails, by_env: dict[str, str], flags: set[str]) -> str:
    """``SYNC_PORT: 'x' is not a valid int``: the source first, then what is wrong with its value."""
    ctx_error = (error.get("ctx") or {}).get("error")
    if not error["loc"]:  # the whole object (a rule across settings)
        return str(ctx_error or error["msg"])
    var = str(error["loc"][0])
    name = by_env.get(var, var)
    source = "--" + name.replace("_", "-") if name in flags else var
    kind = error["type"].split("_")[0]  # int_parsing, int_from_float, float_parsing, literal_error, ...
    if kind in ("int", "float"):
        return f"{source}: {error['input']!r} is not a valid {kind}"
    if kind == "literal":
        choices = [str(c) for c in get_args(Settings.model_fields[name].annotation)]
        return f"{source}: {error['input']!r} is not {', '.join(choices[:-1])} or {choices[-1]}"
    return f"{source}: {ctx_error or error['msg']}"
