"""app/metrics.py and storage/stats.py: plain counters, snapshots summed across workers, the
exposition, the bearer rule and `sync-server status`'s text; no Redis, no server."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from app.cli import status_text
from app.metrics import SPEC, Snapshot, is_loopback
from storage.stats import REDIS_BUCKETS, Histogram, RedisStats


def _samples(snap: Snapshot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from app.metrics import _Fixed

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(snap.families()))
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_histogram_buckets_are_le_and_weighted() -> None:
    h = Histogram((0.1, 1.0))
    h.observe(0.1)  # on the bound: le="0.1"
    h.observe(0.5, n=3)  # one event reaching 3 subscribers
    h.observe(7.0)
    assert h.counts == [1, 3, 1] and h.count == 5
    assert abs(h.sum - (0.1 + 1.5 + 7.0)) < 1e-9


def test_redis_stats_by_command() -> None:
    r = RedisStats()
    r.observe("get", 0.0002)
    r.observe("get", 0.002)
    r.failed("script")
    assert r.latency["get"].bounds == REDIS_BUCKETS and r.latency["get"].count == 2
    assert r.errors == {"script": 1}


def test_snapshots_of_workers_add_up_and_a_dead_workers_gauges_are_dropped() -> None:
    def worker(requests: int, connections: int) -> Snapshot:
        s = Snapshot()
        h = Histogram((0.01, 0.1))
        for _ in range(requests):
            h.observe(0.05)
        s.histogram("sync_http_request_duration_seconds", h, route="/v1/Services", method="GET", status="200")
        s.counter("sync_ws_frames_sent", 10 * requests)
        s.gauge("sync_ws_connections", connections)
        s.gauge("sync_worker_processes", 1)
        return s

    total = worker(2, 5)
    total.merge(Snapshot.from_json(worker(3, 7).to_json()))  # alive: through its file
    total.merge(Snapshot.from_json(worker(4, 9).to_json()), gauges=False)  # dead: its totals stay
    got = _samples(total)
    labels = (("method", "GET"), ("route", "/v1/Services"), ("status", "200"))
    assert got[("sync_http_request_duration_seconds_count", labels)] == 9
    assert got[("sync_http_request_duration_seconds_bucket", (("le", "0.01"), *labels))] == 0
    assert got[("sync_http_request_duration_seconds_bucket", (("le", "0.1"), *labels))] == 9
    assert got[("sync_http_request_duration_seconds_bucket", (("le", "+Inf"), *labels))] == 9
    assert got[("sync_ws_frames_sent_total", ())] == 90
    assert got[("sync_ws_connections", ())] == 12
    assert got[("sync_worker_processes", ())] == 2


def test_every_family_is_declared_with_a_bounded_label_set() -> None:
    s = Snapshot()
    s.counter("sync_webhook_attempts", 1, outcome="delivered")
    s.gauge("sync_webhook_queue_pending", 3, service="IS" + "0" * 32)
    names = {f.name for f in s.families()}
    assert names == {"sync_webhook_attempts", "sync_webhook_queue_pending"}
    assert all(name.startswith("sync_") for name in SPEC)


def test_loopback_binds() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("example.com")


def test_status_text_reads_the_exposition() -> None:
    s = Snapshot()
    s.gauge("sync_worker_processes", 2)
    s.gauge("sync_redis_up", 1)
    s.gauge("sync_valkey_embedded", 1)
    s.counter("sync_valkey_restarts", 1)
    s.gauge("sync_ws_connections", 3)
    s.gauge("sync_ws_subscriptions", 5)
    s.counter("sync_ws_overflow_closes", 2)
    for status in ("200", "503"):
        h = Histogram((0.1,))
        h.observe(0.01)
        s.histogram("sync_http_request_duration_seconds", h, route="/v1/Services", method="GET", status=status)
    sid = "IS" + "a" * 32
    s.gauge("sync_webhook_queue_pending", 4, service=sid)
    s.gauge("sync_webhook_queue_oldest_seconds", 90, service=sid)
    s.gauge("sync_webhook_failing", 1, service=sid)
    s.gauge("sync_webhook_dead_letters", 2, service=sid)
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from app.metrics import _Fixed

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(s.families()))
    text = status_text(generate_latest(registry).decode())
    assert "workers        2 processes" in text
    assert "valkey         embedded, up, 1 restart\n" in text
    assert "connections    3" in text and "subscriptions  5" in text
    assert "2 slow-consumer closes (308)" in text
    assert "rest requests  2 (1 answered 5xx)" in text
    assert f"  {sid}  pending=4  oldest=1.5m  FAILING  dead_letters=2" in text
