"""Plain counters for /metrics, kept where things happen (app/metrics.py exposes them at scrape time).

The hot paths (a frame per subscriber, a Redis call per request) count in plain ints and in
``Histogram`` below: an attribute increment, or a ``bisect`` and two additions, and no lock, no
allocation. prometheus_client's own metrics take a lock per ``inc``/``observe``, several percent of
the ~8 µs a fan-out delivery costs; so no module of storage/ or realtime/ imports it, and app/metrics.py
turns these into Prometheus families only when /metrics is read.
"""

from __future__ import annotations

from bisect import bisect_left

# Upper bounds (seconds, Prometheus ``le``) of the histograms; +Inf is implied.
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
FANOUT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """A latency histogram in plain numbers: ``counts[i]`` observations in bucket i (not cumulative;
    the last one is +Inf), their ``sum``. Single-threaded use (one event loop)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, n: int = 1) -> None:
        """``n`` observations of ``value`` (n > 1: one event delivered to n subscribers at once)."""
        self.counts[bisect_left(self.bounds, value)] += n
        self.sum += value * n

    @property
    def count(self) -> int:
        return sum(self.counts)


class RedisStats:
    """Redis calls through the guarded client (redis_client.py ``guard``), by command: latency
    histogram and failures to reach Redis. The command names are the client's methods ("script" for
    a Lua script, "pipeline" for a pipeline's execute): a bounded set."""

    __slots__ = ("errors", "latency")

    def __init__(self) -> None:
        self.latency: dict[str, Histogram] = {}
        self.errors: dict[str, int] = {}

    def observe(self, command: str, seconds: float) -> None:
        h = self.latency.get(command)
        if h is None:
            h = self.latency[command] = Histogram(REDIS_BUCKETS)
        h.observe(seconds)

    def failed(self, command: str) -> None:
        self.errors[command] = self.errors.get(command, 0) + 1


class SweepStats:
    """The expiry sweeper of this process (expiry.py ``run_sweeper``)."""

    __slots__ = ("expired", "sweeps")

    def __init__(self) -> None:
        self.expired = 0  # objects and items deleted because they expired
        self.sweeps = 0  # ticks run
