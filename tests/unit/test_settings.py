"""Settings: environment parsing, validation, CLI flags and the README table, with no Redis and no server."""

from __future__ import annotations

import dataclasses
import re
from importlib.metadata import version
from pathlib import Path

import pytest

from app.cli import _parser, main
from app.flags import flag, overrides
from app.main import gateway_config, webhook_options
from app.settings import DENY_NETWORKS, Settings, env_name, render

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting from the machine or the test run leaks in: each test sets what it reads."""
    import os

    for var in list(os.environ):
        if var.startswith(("SYNC_", "TWILIO_", "REDIS_")):
            monkeypatch.delenv(var)
    return monkeypatch


def _error(**overrides: object) -> str:
    with pytest.raises(ValueError) as caught:
        Settings.from_env(**overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- the README's table and the declarations -----------------------------------------------------


def _readme_settings() -> dict[str, str | None]:
    """``{variable: default as written}`` from the README's Settings table (None: "unset")."""
    section = (ROOT / "README.md").read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    table: dict[str, str | None] = {}
    for row in (line for line in section.splitlines() if line.startswith("| `")):
        names_cell, default_cell = (cell.strip() for cell in row.strip("|").split("|")[:2])
        names = re.findall(r"`([A-Z0-9_]+)`", names_cell)
        defaults: list[str | None]
        if default_cell.startswith("unset"):
            defaults = [None] * len(names)
        elif default_cell.startswith("empty"):
            defaults = [""] * len(names)
        else:
            defaults = list(re.findall(r"`([^`]*)`", default_cell))
        assert len(defaults) == len(names), f"README row needs one default per variable: {row}"
        table.update(zip(names, defaults, strict=True))
    return table


def test_readme_settings_table_matches_the_declarations() -> None:
    declared = {env_name(name): render(field.default) for name, field in Settings.model_fields.items()}
    assert _readme_settings() == declared


# --- environment ---------------------------------------------------------------------------------


def test_defaults_without_environment() -> None:
    s = Settings.from_env()
    assert (s.host, s.port, s.workers, s.redis_url, s.data_dir, s.public_url) == (
        "127.0.0.1",
        8080,
        1,
        None,
        "./data",
        None,
    )
    assert s.webhooks is True and s.redis_cluster is False
    assert s.redis_appendfsync == "always"  # the embedded Valkey: no acknowledged write lost if it crashes
    assert s.webhook_allow_networks == () and s.webhook_deny_networks == DENY_NETWORKS


def test_every_documented_name_is_read(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SYNC_PORT", "9000")
    clean_env.setenv("SYNC_WEBHOOK_READ_TIMEOUT_S", "2.5")
    clean_env.setenv("SYNC_REDIS_APPENDFSYNC", "everysec")
    clean_env.setenv("REDIS_URL", "redis://127.0.0.1:7000/0")
    clean_env.setenv("TWILIO_ACCOUNT_SID", "AC1")
    clean_env.setenv("TWILIO_AUTH_TOKEN", "secret")
    clean_env.setenv("SYNC_WEBHOOK_ALLOW_NETWORKS", " 10.0.0.0/8, ,::1/128 ")
    s = Settings.from_env()
    assert (s.port, s.webhook_read_timeout_s, s.redis_appendfsync) == (9000, 2.5, "everysec")
    assert (s.redis_url, s.account_sid, s.auth_token) == ("redis://127.0.0.1:7000/0", "AC1", "secret")
    assert s.webhook_allow_networks == ("10.0.0.0/8", "::1/128")
    assert "secret" not in repr(s)


def test_only_the_exact_names_count(clean_env: pytest.MonkeyPatch) -> None:
    for var in ("port", "sync_port", "SYNC_port", "SYNC_REDIS_URL", "REDIS_PORT"):
        clean_env.setenv(var, "1")
    assert Settings.from_env() == Settings()


def test_empty_variable_is_unset(clean_env: pytest.MonkeyPatch) -> None:
    for var in ("SYNC_PORT", "SYNC_WEBHOOKS", "SYNC_WEBHOOK_DENY_NETWORKS", "REDIS_URL", "TWILIO_ACCOUNT_SID"):
        clean_env.setenv(var, "")
    assert Settings.from_env() == Settings()


@pytest.mark.parametrize(
    ("raw", "value"), [("1", True), ("0", False), ("true", True), ("FALSE", False), ("yes", True), ("No", False)]
)
def test_booleans(clean_env: pytest.MonkeyPatch, raw: str, value: bool) -> None:
    clean_env.setenv("SYNC_WEBHOOKS", raw)
    clean_env.setenv("REDIS_CLUSTER", raw)
    s = Settings.from_env()
    assert s.webhooks is value and s.redis_cluster is value


@pytest.mark.parametrize("raw", ["on", "off", "y", "2", "maybe"])
def test_other_boolean_words_are_refused(clean_env: pytest.MonkeyPatch, raw: str) -> None:
    clean_env.setenv("SYNC_WEBHOOKS", raw)
    assert _error() == f"SYNC_WEBHOOKS: {raw!r} is not a valid bool"


@pytest.mark.parametrize(
    ("var", "raw", "message"),
    [
        ("SYNC_PORT", "notaport", "SYNC_PORT: 'notaport' is not a valid int"),
        ("SYNC_PORT", "80.5", "SYNC_PORT: '80.5' is not a valid int"),
        ("SYNC_WS_PING_S", "soon", "SYNC_WS_PING_S: 'soon' is not a valid float"),
        ("SYNC_REDIS_APPENDFSYNC", "sometimes", "SYNC_REDIS_APPENDFSYNC: 'sometimes' is not always, everysec or no"),
        ("SYNC_PUBLIC_URL", "sync.example.com", "SYNC_PUBLIC_URL: 'sync.example.com' does not start with http://"),
        ("SYNC_WEBHOOK_DENY_NETWORKS", "10.0.0.0/8,nope", "SYNC_WEBHOOK_DENY_NETWORKS: 'nope' is not a network (CIDR)"),
        ("TWILIO_AUTH_TOKEN", "secret", "set both TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, or neither"),
    ],
)
def test_errors_are_one_line_naming_the_variable(
    clean_env: pytest.MonkeyPatch, var: str, raw: str, message: str
) -> None:
    clean_env.setenv(var, raw)
    assert _error().startswith(message)


def test_several_errors_share_the_line(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SYNC_PORT", "x")
    clean_env.setenv("SYNC_WORKERS", "y")
    assert _error() == "SYNC_PORT: 'x' is not a valid int; SYNC_WORKERS: 'y' is not a valid int"


def test_settings_are_immutable() -> None:
    s = Settings.from_env()
    with pytest.raises(ValueError):
        s.port = 1  # type: ignore[misc]


def test_to_env_reproduces_the_settings(clean_env: pytest.MonkeyPatch) -> None:
    """What the server command hands its uvicorn workers: every setting, flags included."""
    s = Settings.from_env(
        port=9001, webhooks=False, webhook_deny_networks="10.0.0.0/8,::1/128", ws_ping_s=0.25, public_url="http://x"
    )
    for var, text in s.to_env().items():
        clean_env.setenv(var, text)
    assert Settings.from_env() == s


# --- flags ---------------------------------------------------------------------------------------


def _flags(*argv: str) -> dict[str, object]:
    return overrides(_parser().parse_args(list(argv)))


def test_every_setting_has_a_flag_documented_by_its_declaration() -> None:
    help_text = " ".join(_parser().format_help().split())
    for name, field in Settings.model_fields.items():
        assert re.search(re.escape(flag(name)) + r"[ ,]", help_text), flag(name)  # "--x INT" or "--x, --no-x"
        assert f"{field.description} [{env_name(name)}, default" in help_text


def test_flag_is_the_variable_without_its_prefix() -> None:
    """As the README says: --port for SYNC_PORT, --redis-url for REDIS_URL, --account-sid for TWILIO_ACCOUNT_SID."""
    for name in Settings.model_fields:
        var = env_name(name).removeprefix("SYNC_").removeprefix("TWILIO_")
        assert flag(name) == "--" + var.lower().replace("_", "-")


def test_flags_before_or_after_the_subcommand() -> None:
    assert _flags("--port", "9000", "serve") == {"port": 9000}
    assert _flags("serve", "--port", "9000") == {"port": 9000}
    assert _flags("keys", "list", "--data-dir", "X") == {"data_dir": "X"}
    assert _flags("keys", "--data-dir", "X", "list") == {"data_dir": "X"}
    assert _flags("--port", "1", "serve", "--port", "2") == {"port": 2}  # the later one wins
    assert _flags("token", "--identity", "alice", "--webhook-read-timeout-s", "30") == {"webhook_read_timeout_s": 30.0}


def test_boolean_and_list_flags() -> None:
    assert _flags("--no-webhooks", "--redis-cluster") == {"webhooks": False, "redis_cluster": True}
    got = _flags("--webhook-allow-networks", "10.0.0.0/8, 192.168.0.0/16")
    assert Settings.from_env(**got).webhook_allow_networks == ("10.0.0.0/8", "192.168.0.0/16")


def test_flags_win_over_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SYNC_PORT", "7000")
    clean_env.setenv("SYNC_LOG_LEVEL", "debug")
    s = Settings.from_env(**_flags("serve", "--port", "9000"))
    assert (s.port, s.log_level) == (9000, "debug")


def test_a_bad_flag_value_names_the_flag() -> None:
    assert _error(public_url="ftp://x").startswith("--public-url: 'ftp://x' does not start")


def test_cli_prints_a_setting_error_and_exits_non_zero(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SYNC_WEBHOOK_ALLOW_NETWORKS", "everywhere")
    with pytest.raises(SystemExit) as caught:
        main(["account"])
    assert caught.value.code == "sync-server: SYNC_WEBHOOK_ALLOW_NETWORKS: 'everywhere' is not a network (CIDR)"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"sync-server {version('sync-server')}"


# --- the realtime options come from the settings, with no defaults of their own ------------------

# constants, not knobs
NOT_SETTINGS = {"init_timeout_s", "reconnect_backoff_ms", "drain_timeout_s", "queue_bytes", "batch", "close_grace_s"}


def test_realtime_options_are_built_from_settings_only() -> None:
    s = Settings.from_env(ws_queue_frames=7, webhook_lease_ms=1234, webhook_allow_networks="10.0.0.0/8")
    gateway, hooks = gateway_config(s), webhook_options(s)
    assert (gateway.limits.queue_frames, hooks.lease_ms, hooks.allow_networks) == (7, 1234, ("10.0.0.0/8",))
    for options in (gateway, gateway.limits, hooks):
        for f in dataclasses.fields(options):  # type: ignore[arg-type]
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            assert has_default == (f.name in NOT_SETTINGS), f"{type(options).__name__}.{f.name}"


@pytest.mark.parametrize("url", ["rediss://cache.example.com:6380/0", "unix:///run/valkey.sock"])
def test_a_cluster_over_tls_or_a_unix_socket_is_refused_in_one_line(clean_env: pytest.MonkeyPatch, url: str) -> None:
    clean_env.setenv("REDIS_URL", url)
    clean_env.setenv("REDIS_CLUSTER", "true")
    assert _error() == "REDIS_CLUSTER needs a redis:// REDIS_URL (TLS and Unix sockets are not supported on a Cluster)"
    clean_env.setenv("REDIS_CLUSTER", "false")
    assert Settings.from_env().redis_url == url  # standalone: redis-py speaks both
