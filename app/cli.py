"""The ``sync-server`` command: run the server (default), manage API keys, show the account."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import TextIO

from realtime.tokens import mint
from storage import NotFoundError, Store, StoreUnavailableError, accounts, services, webhooks
from storage.embedded import DataDirInUse, EmbeddedRedis, url_file
from storage.startup import RedisNotReachableError, redacted, when_reachable

from .flags import overrides, settings_parent
from .metrics import RUN_DIR_VAR, write_restarts
from .observe import configure_logging, log_config
from .settings import Settings

log = logging.getLogger("sync.cli")


def _parser() -> argparse.ArgumentParser:
    """Every setting's flag is accepted before the subcommand and after it (each parser has them all)."""
    settings = settings_parent()
    # the admin commands' choice of account (before or after the subcommand, like the settings)
    admin = argparse.ArgumentParser(add_help=False)
    admin.add_argument(
        "--account",
        metavar="AC…",
        default=argparse.SUPPRESS,
        help="the account an admin command acts on (default: TWILIO_ACCOUNT_SID, else the account the "
        "server serves, as recorded in its store, else the store's only account)",
    )
    p = argparse.ArgumentParser(
        prog="sync-server",
        usage="%(prog)s [--SETTING VALUE ...] [--version] [COMMAND [--SETTING VALUE ...] ...]",
        description="Twilio Sync compatible server. The admin commands (all but serve) act on the store of "
        "the server running on --data-dir (or on --redis-url) and never create an account or a store.",
        parents=[settings, admin],
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {version('sync-server')}")

    def command(
        parent: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str
    ) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=help, parents=[settings] if name == "serve" else [settings, admin])

    sub = p.add_subparsers(dest="command")
    command(sub, "serve", "run the server (the default)")
    command(sub, "account", "print the account SID and auth token")
    tok = command(sub, "token", "print an access token for the twilio-sync SDK (development)")
    tok.add_argument("--identity", required=True, help="the token's identity")
    tok.add_argument("--service", help="IS… (default: the account's oldest Service, created if none)")
    tok.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600, max 86400)")
    keys = command(sub, "keys", "manage API keys (SK…) used for Basic auth and access tokens")
    ks = keys.add_subparsers(dest="keys_command", required=True)
    create = command(ks, "create", "create a key; its secret is shown once")
    create.add_argument("--name", default="", help="friendly name")
    command(ks, "list", "list keys")
    delete = command(ks, "delete", "delete a key")
    delete.add_argument("sid")
    hooks = command(sub, "webhooks", "webhook queues and the deliveries that exhausted their retries (dead letters)")
    hs = hooks.add_subparsers(dest="webhooks_command", required=True)
    status = command(hs, "status", "per Service: pending, age of the oldest pending, failing since, dead letters")
    failed = command(hs, "failed", "list dead letters, oldest first")
    replay = command(hs, "replay", "queue dead letters again (to the Service's current webhook URL)")
    for cmd in (status, failed, replay):
        cmd.add_argument("--service", help="only this Service (IS…)")
    replay.add_argument("ids", nargs="*", help="only these dead-letter ids (needs --service)")
    command(sub, "purge", "delete now what deleted Services left (the running server does it in the background)")
    command(sub, "status", "the running server: connections, subscriptions, webhook queues, Valkey (from /metrics)")
    _check_parser(command(sub, "check", "drive a server with a bounded workload and verify its guarantees"))
    return p


def _check_parser(chk: argparse.ArgumentParser) -> None:
    """``sync-server check``: its own options (the account comes from --account-sid/--auth-token)."""
    chk.add_argument("--url", help="the server to check (e.g. http://127.0.0.1:8080); or --spawn")
    chk.add_argument("--api-key", help="SK… to sign access tokens (default: one created in the server's store)")
    chk.add_argument("--api-secret", help="the API key's secret")
    chk.add_argument("--duration", type=float, default=10.0, help="seconds of workload (default 10)")
    chk.add_argument("--writers", type=int, default=4, help="concurrent REST writers (default 4)")
    chk.add_argument("--subscribers", type=int, default=2, help="SDK-protocol subscribers (default 2)")
    chk.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    chk.add_argument("--max-ops", type=int, default=600, help="operations per Document at most (default 600)")
    chk.add_argument("--spawn", action="store_true", help="start a server of its own (temp dir, embedded Valkey)")
    chk.add_argument(
        "--cluster",
        action="store_true",
        help="with --spawn: a Valkey Cluster of 3 masters + 3 replicas (AOF on) and two servers on it",
    )
    chk.add_argument(
        "--faults",
        action="store_true",
        help="with --spawn: kill -9 at random of a server (restarted) and of its Valkey, or with --cluster "
        "of a Cluster master (its replica is promoted; it comes back as a replica). --durability replica "
        "is the level that loses no acknowledged write across a master's kill",
    )
    chk.add_argument("--record", metavar="FILE", help="save what was recorded (JSON) for --verify")
    chk.add_argument("--verify", metavar="FILE", help="verify a saved recording instead of running")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(**overrides(args))
    except ValueError as exc:
        sys.exit(f"sync-server: {exc}")
    configure_logging(settings.log_format, settings.log_level)
    command = args.command or "serve"
    if command == "serve" and getattr(args, "account", None):
        sys.exit("sync-server: --account is for the admin commands; serve uses TWILIO_ACCOUNT_SID")
    try:
        if command == "serve":
            serve(settings)
        elif command == "status":
            status(settings)
        elif command == "check":
            sys.exit(check(settings, args))
        else:
            with _admin_redis(settings) as url:
                asyncio.run(_admin(settings, url, args))
    except (DataDirInUse, StoreUnavailableError) as exc:  # an admin command's Redis down: one line
        sys.exit(f"sync-server: {exc}")


@contextlib.contextmanager
def redis_for(
    settings: Settings,
    keep_running: bool,
    on_valkey_lost: Callable[[str], None] | None = None,
    on_restart: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """The Redis URL to use: REDIS_URL, a running server's embedded Valkey, or a new embedded one
    (which locks the data dir; with ``on_valkey_lost`` it is restarted whenever it dies, and
    ``on_valkey_lost(reason)`` is called if it cannot be; ``on_restart(n)`` after each restart)."""
    if settings.redis_url:
        yield settings.redis_url
        return
    running = url_file(settings.data_dir)
    if not keep_running and running.exists():
        url = running.read_text().strip()
        if _reachable(url):
            yield url
            return
    embedded = EmbeddedRedis(settings.data_dir, settings.redis_port, settings.redis_appendfsync)
    embedded.start()
    running.write_text(embedded.url)
    if on_valkey_lost is not None:
        embedded.supervise(on_valkey_lost, on_restart)
    try:
        yield embedded.url
    finally:
        embedded.stop()
        with contextlib.suppress(OSError):
            running.unlink()


def check(settings: Settings, args: argparse.Namespace) -> int:
    """``sync-server check`` (checker/): the target's account from the settings, its API key given or
    created in the server's store (there is no REST API for keys)."""
    from checker.run import Options, main as run_check
    from checker.workload import Plan, Target

    if args.faults and not args.spawn:
        sys.exit("sync-server: --faults needs --spawn (the checker kills only processes it started)")
    if args.cluster and not args.spawn:
        sys.exit("sync-server: --cluster needs --spawn (to check a running Cluster deployment, give its --url)")
    plan = Plan(args.duration, args.writers, args.subscribers, args.seed, args.max_ops)
    target = None
    if not (args.spawn or args.verify):
        if not (args.url and settings.account_sid and settings.auth_token):
            sys.exit("sync-server: check needs --url, --account-sid and --auth-token (or --spawn, or --verify FILE)")
        key, secret = args.api_key, args.api_secret
        if not (key and secret):
            with _admin_redis(settings) as url:
                key, secret = asyncio.run(_check_key(settings, url))
        target = Target(args.url, settings.account_sid, settings.auth_token, key, secret)
    opts = Options(
        plan,
        target,
        args.spawn,
        args.faults,
        args.record,
        args.verify,
        settings.event_log_max,
        settings.durability,
        args.cluster,
    )
    return run_check(opts)


async def _check_key(settings: Settings, url: str) -> tuple[str, str]:
    store = await Store.connect(url, cluster=settings.redis_cluster)
    try:
        assert settings.account_sid
        found = [k for k in await accounts.list_keys(store, settings.account_sid) if k.friendly_name == CHECK_KEY]
        key = found[0] if found else await accounts.create_key(store, settings.account_sid, CHECK_KEY)
        return key.sid, key.secret
    finally:
        await store.close()


CHECK_KEY = "sync-server check"


def _say(message: str) -> None:
    print(f"sync-server: {message}", file=sys.stderr)


@contextlib.contextmanager
def _admin_redis(settings: Settings) -> Iterator[str]:
    """The store an admin command acts on, and never a new one: REDIS_URL (--redis-url), else the
    Valkey of the server running on the data dir, else (no server running) the data dir's existing
    store, its Valkey started for this command. With none of these it exits, saying how to choose."""
    if settings.redis_url:
        _say(f"using the Redis at {redacted(settings.redis_url)} (REDIS_URL / --redis-url)")
        yield settings.redis_url
        return
    data = Path(settings.data_dir).resolve()
    running = url_file(data)
    if running.exists():
        url = running.read_text().strip()
        if _reachable(url):
            _say(f"using the running server's Valkey at {url} (data dir {data})")
            yield url
            return
    if not any((data / "redis" / name).exists() for name in ("appendonlydir", "appendonly.aof", "dump.rdb")):
        sys.exit(
            f"sync-server: no sync-server store in {data} (no server running on it, no data): run this "
            "command where the server runs, or point it at the server's store with --data-dir DIR "
            "(SYNC_DATA_DIR) or --redis-url URL (REDIS_URL)"
        )
    _say(f"using the data in {data / 'redis'} (no server running on it: its Valkey is started for this command)")
    with redis_for(settings, keep_running=False) as url:
        yield url


def _reachable(url: str) -> bool:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


async def _bootstrap(settings: Settings, url: str) -> tuple[str, str, bool]:
    """The account ``serve`` serves (sid, token, created now): TWILIO_* (created or updated, and
    recorded in the store for the admin commands), else the store's default one, created on first start."""
    store = await Store.connect(url, settings.store_config(), cluster=settings.redis_cluster)
    try:
        if settings.account_sid and settings.auth_token:
            await accounts.serve_account(store, settings.account_sid, settings.auth_token)
            return settings.account_sid, settings.auth_token, False
        return await accounts.default_account(store)
    finally:
        await store.close()


async def _admin(settings: Settings, url: str, args: argparse.Namespace) -> None:
    """An admin command on an existing account of the store (never creating one)."""
    store = await Store.connect(url, cluster=settings.redis_cluster)
    try:
        if args.command == "webhooks":  # across the store's Services, whatever their account
            await _webhooks(store, args)
            return
        if args.command == "purge":  # every account's deleted Services
            counter = Progress("purged objects")
            removed = await services.purge_pending(store, progress=counter.update)
            counter.close()
            print(f"purged {removed} object(s) of deleted Services")
            return
        try:
            account, token, why = await accounts.chosen_account(
                store, getattr(args, "account", None) or settings.account_sid
            )
        except accounts.NoAccount as exc:
            sys.exit(f"sync-server: {exc}")
        _say(f"account {account} ({why}; choose another with --account)")
        if args.command == "account":
            print(f"TWILIO_ACCOUNT_SID={account}\nTWILIO_AUTH_TOKEN={token}")
        elif args.command == "token":
            print(await _token(store, account, args))
        elif args.keys_command == "create":
            key = await accounts.create_key(store, account, args.name)
            print(f"sid:    {key.sid}\nsecret: {key.secret}\n(the secret is not shown again)")
        elif args.keys_command == "list":
            for k in await accounts.list_keys(store, account):
                print(f"{k.sid}  {k.friendly_name}")
        elif args.keys_command == "delete":
            owner = await accounts.get_key(store, args.sid)
            if owner is not None and owner.account_sid != account:
                sys.exit(f"sync-server: API key {args.sid} is of account {owner.account_sid}: choose it with --account")
            if not await accounts.delete_key(store, args.sid):
                sys.exit(f"sync-server: no API key {args.sid}")
            print(f"deleted {args.sid}")
    finally:
        await store.close()


async def _token(store: Store, account: str, args: argparse.Namespace) -> str:
    """A Sync access token signed with this account's development API key (created once)."""
    if not 1 <= args.ttl <= 86400:
        sys.exit("sync-server: --ttl must be 1 to 86400 seconds")
    key = next((k for k in await accounts.list_keys(store, account) if k.friendly_name == DEV_KEY_NAME), None)
    if key is None:
        key = await accounts.create_key(store, account, DEV_KEY_NAME)
    service = args.service
    if service is None:
        first = await services.page(store, account, 1, None)
        if first.items:
            service = first.items[0].sid
            _say(f"token for Service {service} (the account's oldest; choose one with --service)")
        else:  # a documented convenience for a new account
            service = (await services.create(store, account, {})).sid
            _say(f"created Service {service} for the token (the account had none)")
    else:
        try:
            await services.get(store, account, service)
        except NotFoundError:
            sys.exit(f"sync-server: no Service {service} in account {account}")
    return mint(account, key.sid, key.secret, args.identity, service, args.ttl)


DEV_KEY_NAME = "sync-server token"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


async def _webhooks(store: Store, args: argparse.Namespace) -> None:
    if args.webhooks_command == "status":
        import time
        from datetime import UTC, datetime

        for q in await webhooks.status(store, args.service):
            oldest = "-" if q.oldest_age_s is None else _age(q.oldest_age_s)
            failing = "-"
            if q.failing_since is not None:
                when = datetime.fromtimestamp(q.failing_since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                failing = f"{when} ({_age(max(0.0, time.time() - q.failing_since))} ago)"
            print(
                f"{q.service_sid}  pending={q.pending}  oldest={oldest}  failing_since={failing}"
                f"  dead_letters={q.dead_letters}  {q.url or '(no webhook url)'}"
            )
        return
    if args.webhooks_command == "failed":
        for d in await webhooks.failed(store, args.service):
            target = d.event.sid or d.event.identity
            print(f"{d.service_sid}  {d.id}  {d.event.type}  {target}  attempts={d.attempts}  {d.url}  {d.error}")
        return
    if args.ids and not args.service:
        sys.exit("sync-server: replaying chosen ids needs --service")
    sids = [args.service] if args.service else sorted({d.service_sid for d in await webhooks.failed(store)})
    total = 0
    counter = Progress("queued again")
    for n, sid in enumerate(sids, 1):
        part = counter.part(total, f"Service {n}/{len(sids)} {sid}")
        total += await webhooks.replay(store, sid, args.ids or None, part)
    counter.close()
    print(f"queued {total} webhook(s) again")


class Progress:
    """A counter line for long admin work, on a terminal only (stderr a TTY): rewritten in place at
    most ``every_s`` apart and once more at the end, then ended with a newline. Quiet when stderr is
    a file or a pipe, so scripts and logs get only the summary line printed after it."""

    def __init__(self, what: str, stream: TextIO | None = None, every_s: float = 0.1) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.on = self.stream.isatty()
        self.every_s = every_s
        self._last = -every_s
        self._line = ""  # the latest count
        self._shown = ""  # what the terminal shows

    def update(self, done: int, detail: str = "") -> None:
        if not self.on:
            return
        self._line = f"{self.what}: {done}" + (f" ({detail})" if detail else "")
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._show()

    def part(self, before: int, label: str) -> Callable[[int, int], None]:
        """The callback of one part of the work (a Service) that ``before`` items preceded."""
        return lambda done, of: self.update(before + done, f"{label}: {done} of {of}")

    def _show(self) -> None:
        self.stream.write(f"\r{self._line}\x1b[K")  # back to the line's start, erase a longer one
        self.stream.flush()
        self._shown = self._line

    def close(self) -> None:
        if not self._line:
            return
        if self._shown != self._line:
            self._show()
        self.stream.write("\n")
        self.stream.flush()


def server_url(settings: Settings) -> str:
    """The running server's base URL: <data dir>/redis/server-url (written by ``serve`` with the
    embedded Valkey), else --host/--port (SYNC_HOST/SYNC_PORT; an any-address bind read on loopback)."""
    path = Path(settings.data_dir) / "redis" / SERVER_URL_FILE
    if not settings.redis_url and path.exists():
        return path.read_text().strip()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{'[' + host + ']' if ':' in host else host}:{settings.port}"


def status(settings: Settings) -> None:
    """``sync-server status``: the running server's /metrics, readable."""
    import urllib.error
    import urllib.request

    base = server_url(settings)
    request = urllib.request.Request(base + "/metrics")
    if settings.metrics_token:
        request.add_header("Authorization", f"Bearer {settings.metrics_token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read().decode()
    except urllib.error.HTTPError as exc:
        hint = " (give its token: --metrics-token / SYNC_METRICS_TOKEN)" if exc.code == 401 else ""
        sys.exit(f"sync-server: {base}/metrics answered {exc.code}{hint}")
    except OSError as exc:
        sys.exit(
            f"sync-server: no server answers at {base} ({getattr(exc, 'reason', exc)}): run this where the "
            "server runs (its --data-dir), or give its --host and --port"
        )
    _say(f"server at {base}")
    print(status_text(text))


def status_text(exposition: str) -> str:
    """The readable summary of a /metrics answer (pure: unit-tested)."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            values.setdefault(sample.name, []).append((sample.labels, sample.value))

    def total(name: str, **match: str) -> float:
        return sum(v for labels, v in values.get(name, []) if all(labels.get(k) == w for k, w in match.items()))

    def n(value: float) -> str:
        return f"{int(value):,}"

    lines = []
    workers = total("sync_worker_processes")
    lines.append(f"workers        {n(workers)} process{'es' if workers != 1 else ''}")
    redis = "up" if total("sync_redis_up") else "DOWN"
    if total("sync_valkey_embedded"):
        restarts = total("sync_valkey_restarts_total")
        lines.append(f"valkey         embedded, {redis}, {n(restarts)} restart{'s' if restarts != 1 else ''}")
    else:
        lines.append(f"redis          external, {redis}")
    errors = total("sync_redis_errors_total")
    calls = total("sync_redis_command_duration_seconds_count")
    mean = total("sync_redis_command_duration_seconds_sum") / calls * 1000 if calls else 0.0
    lines.append(f"redis calls    {n(calls)} (mean {mean:.2f} ms), {n(errors)} failed to reach Redis")
    lines.append(f"connections    {n(total('sync_ws_connections'))}")
    lines.append(f"subscriptions  {n(total('sync_ws_subscriptions'))}")
    deliveries = total("sync_fanout_delivery_seconds_count")
    lag = total("sync_fanout_delivery_seconds_sum") / deliveries * 1000 if deliveries else 0.0
    lines.append(
        f"websocket      {n(total('sync_ws_frames_sent_total'))} frames sent "
        f"({total('sync_ws_sent_bytes_total') / 1e6:.1f} MB), {n(deliveries)} deliveries (mean {lag:.1f} ms "
        f"after the write), {n(total('sync_ws_replays_total'))} replays, "
        f"{n(total('sync_ws_overflow_closes_total'))} slow-consumer closes (308), "
        f"{n(total('sync_ws_conflated_frames_total'))} conflated"
    )
    requests = total("sync_http_request_duration_seconds_count")
    failed = sum(
        v
        for labels, v in values.get("sync_http_request_duration_seconds_count", [])
        if labels.get("status", "").startswith("5")
    )
    lines.append(f"rest requests  {n(requests)} ({n(failed)} answered 5xx)")
    lines.append(f"sweeper        {n(total('sync_sweeper_expired_total'))} expired")
    attempts = ", ".join(
        f"{n(total('sync_webhook_attempts_total', outcome=o))} {o}" for o in ("delivered", "retried", "dead_lettered")
    )
    lines.append(f"webhooks       {attempts}")
    services = sorted({labels["service"] for labels, _ in values.get("sync_webhook_queue_pending", [])})
    for sid in services:
        pending = total("sync_webhook_queue_pending", service=sid)
        oldest = total("sync_webhook_queue_oldest_seconds", service=sid)
        failing = "FAILING" if total("sync_webhook_failing", service=sid) else "ok"
        dead = total("sync_webhook_dead_letters", service=sid)
        lines.append(
            f"  {sid}  pending={n(pending)}  oldest={_age(oldest) if pending else '-'}  {failing}"
            f"  dead_letters={n(dead)}"
        )
    return "\n".join(lines)


# How long the server may take to shut down after its Valkey is lost for good before it just exits.
GIVE_UP_GRACE_S = 30.0


def serve(settings: Settings) -> None:
    """Run the server until SIGINT (Ctrl-C) or SIGTERM, then shut down in order: /readyz answers
    503 and the gateway tells WebSocket clients to reconnect, REST being served on for SYNC_DRAIN_S
    after a SIGTERM (app/main.py ``_drain_on_signal``), uvicorn stops accepting and
    lets in-flight requests finish (at most 10 s), the lifespan stops the webhook worker and the
    store, and the embedded Valkey, in a process group of its own so a terminal's Ctrl-C does not
    reach it, is stopped last and its url file removed. Exit status 0 (1 if Valkey was lost)."""
    valkey_lost = threading.Event()

    def lose_valkey(reason: str) -> None:  # the supervisor thread, after its last failed restart
        log.critical("%s: stopping the server", reason)
        valkey_lost.set()
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown, then exit 1 (below)
        fallback = threading.Timer(GIVE_UP_GRACE_S, os._exit, args=(1,))
        fallback.daemon = True
        fallback.start()

    def on_signal(sig: int, frame: FrameType | None) -> None:
        # Before uvicorn runs, and when uvicorn, having shut down gracefully, restores this handler
        # and raises the signal it caught again: leave through redis_for's cleanup (Valkey is
        # stopped last, the url file removed), exit status 0 (1 if Valkey was lost for good).
        _ignore_shutdown_signals()
        sys.exit(1 if valkey_lost.is_set() else 0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    with contextlib.ExitStack() as run:
        run_dir = run.enter_context(_run_dir()) if settings.metrics else None
        on_restart = write_restarts(run_dir) if run_dir and not settings.redis_url else None
        if on_restart is not None:
            on_restart(0)  # also says "embedded" to /metrics
        url = run.enter_context(redis_for(settings, True, on_valkey_lost=lose_valkey, on_restart=on_restart))
        run.enter_context(_server_url_file(settings))
        _serve(settings, url)
    if valkey_lost.is_set():
        sys.exit(1)


@contextlib.contextmanager
def _run_dir() -> Iterator[str]:
    """A directory of this run, shared by its workers (/metrics snapshots, app/metrics.py), removed at exit."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="sync-server-run-")
    os.environ[RUN_DIR_VAR] = path
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


SERVER_URL_FILE = "server-url"  # in <data dir>/redis while a server with the embedded Valkey runs


@contextlib.contextmanager
def _server_url_file(settings: Settings) -> Iterator[None]:
    """Where `sync-server status` finds the running server: <data dir>/redis/server-url (only with the
    embedded Valkey, whose directory is this server's; with REDIS_URL status uses --host/--port)."""
    path = Path(settings.data_dir) / "redis" / SERVER_URL_FILE
    if settings.redis_url or not path.parent.is_dir():
        yield
        return
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    path.write_text(f"http://{'[' + host + ']' if ':' in host else host}:{settings.port}\n")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def _serve(settings: Settings, url: str) -> None:
    from realtime.websocket import PROTOCOL as WS_PROTOCOL

    from .http_protocol import PROTOCOL

    try:
        account, token, created = asyncio.run(
            when_reachable(partial(_bootstrap, settings, url), url, settings.redis_startup_wait_s, log)
        )
    except (RedisNotReachableError, ValueError) as exc:  # not there, or not usable (too old, no AOF for fsync)
        sys.exit(f"sync-server: {exc}")
    which = (
        f"external Redis at {redacted(settings.redis_url)}"
        if settings.redis_url
        else (
            f"embedded Valkey at {url} (data in {Path(settings.data_dir).resolve() / 'redis'}, "
            f"appendfsync {settings.redis_appendfsync})"
        )
    )
    print(f"sync-server: using {which}", file=sys.stderr)
    if created and sys.stderr.isatty():  # a secret goes to a person's terminal, never to a log
        print(f"sync-server: created account {account} with auth token {token}", file=sys.stderr)
        print("sync-server: (run `sync-server account` to see them again)", file=sys.stderr)
    else:
        what = "created account" if created else "account"
        print(f"sync-server: {what} {account} (`sync-server account` prints its auth token)", file=sys.stderr)
    print(f"sync-server: listening on http://{settings.host}:{settings.port}", file=sys.stderr)
    # Workers are separate processes that build the app from the environment: every setting,
    # flags included, goes there (and the Redis URL, which may be the embedded Valkey's).
    os.environ.update({**settings.to_env(), "REDIS_URL": url})
    with _workers_born_deaf_to_ctrl_c(settings.workers > 1):
        _run_uvicorn(settings, PROTOCOL, WS_PROTOCOL)
    _ignore_shutdown_signals()  # several workers: uvicorn returns instead of raising the signal again


@contextlib.contextmanager
def _workers_born_deaf_to_ctrl_c(several: bool) -> Iterator[None]:
    """A terminal's Ctrl-C reaches every process of the group, workers still importing the app
    included, where it would end in a KeyboardInterrupt traceback. So worker processes are spawned
    with SIGINT blocked (a signal mask survives fork and exec) and unblock it once uvicorn's handlers
    are installed (app/main.py ``_drain_on_signal``): a Ctrl-C that came meanwhile is delivered then,
    and handled like any other. The supervisor's main thread, which spawns them, blocks it too, so a
    thread of its own that never blocks it receives the supervisor's copy (Python runs the handler in
    the main thread all the same)."""
    if not several:
        yield
        return
    from multiprocessing import resource_tracker

    # spawning starts this helper process once, and unblocks SIGINT and SIGTERM after doing so
    resource_tracker.ensure_running()
    receiver = threading.Thread(target=threading.Event().wait, name="sigint-receiver", daemon=True)
    receiver.start()  # a thread inherits its creator's mask: start it before blocking
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _run_uvicorn(settings: Settings, http: str, ws: str) -> None:
    import uvicorn

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        # httptools with head/body read timeouts and a head size cap (SYNC_HTTP_*, read from
        # the environment like the app's settings)
        http=http,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        timeout_worker_healthcheck=settings.worker_start_s,
        log_level=settings.log_level,
        # one format for the app's and uvicorn's logs (SYNC_LOG_FORMAT); uvicorn applies it in
        # every worker process too
        log_config=log_config(settings.log_format, settings.log_level),
        timeout_graceful_shutdown=10,
        access_log=settings.log_level == "debug",
        # the gateway's own WebSocket protocol (realtime/websocket.py: no ASGI, no task per
        # connection), its heartbeats and hard frame cap (the gateway answers frames above
        # SYNC_WS_MAX_FRAME_BYTES with a twilsock close 406 itself; this guards memory)
        ws=ws,
        ws_ping_interval=settings.ws_ping_s,
        ws_ping_timeout=settings.ws_ping_s,
        ws_max_size=settings.ws_max_frame_bytes * 2,
        # off by default: every client (Node's ws under the SDK, browsers) offers it, and its zlib
        # state more than doubles an idle connection's memory for frames of a few hundred bytes
        ws_per_message_deflate=settings.ws_compression,
    )


def _ignore_shutdown_signals() -> None:
    """While the embedded Valkey stops (bounded, EmbeddedRedis.stop), a second Ctrl-C or SIGTERM must
    not interrupt it halfway (a traceback, a Valkey left to PDEATHSIG, a stale url file)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
