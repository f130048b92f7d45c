"""What LoadGen is asked for: the scenario names and :class:`LoadSettings` (durations in ms, rates in samples/s),
and the one place ``mlperf_loadgen`` is imported (only when called: ``pip install "zooinfer[loadgen]"``).

``SCENARIOS`` (from :mod:`zooinfer.parameters`) is also the order ``run_scenarios`` runs them in: Server's search
starts from the Offline throughput and, without an explicit bound, takes its latency bound from the SingleStream
p90."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ZooinferError
from ..parameters import SCENARIOS, scenario_name  # noqa: F401 - re-exported; parsers live below config

INSTALL_HINT = 'pip install "zooinfer[loadgen]"  (the mlcommons-loadgen wheel)'


def _loadgen():
    """The ``mlperf_loadgen`` module, or a ZooinferError saying how to install it."""
    try:
        import mlperf_loadgen
    except ImportError as e:
        raise ZooinferError(f"LoadGen scenarios need MLCommons LoadGen, which is not installed ({e}). "
                            f"Install it with: {INSTALL_HINT}") from None
    return mlperf_loadgen


def available() -> bool:
    """Whether ``mlcommons-loadgen`` is installed."""
    try:
        import mlperf_loadgen  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class LoadSettings:
    """What LoadGen is asked for. Durations in ms, rates in samples (queries) per second.

    ``None`` means "derived from this run": the SingleStream expected latency and the Offline expected QPS from a
    short calibration of the session (LoadGen sizes its pre-generated query schedule from them); the Server search's
    upper end from the Offline throughput; the Server latency bound from 3x the SingleStream p90.
    """

    #: each LoadGen run lasts at least this long (ms)
    min_duration_ms: int = 2000
    #: LoadGen stops issuing after this (ms; 0: no cap). A run cut short is INVALID ("min queries not met")
    max_duration_ms: int = 60_000
    #: at least this many queries per run (SingleStream, Server; Offline: samples). LoadGen's early-stopping check
    #: needs about 64 queries for the SingleStream p90 and about 460 for the Server p99 to call a run VALID
    min_query_count: int = 64
    #: Server runs' own ``min_query_count`` (None: ``min_query_count``)
    server_min_query_count: int | None = None
    #: Server: the p99 latency bound (ms); None: 3x the SingleStream p90 (or 3x one calibrated inference)
    latency_bound_ms: float | None = None
    #: Server: the percentile the bound applies to (LoadGen's ``server_target_latency_percentile``)
    latency_percentile: float = 0.99
    #: Server search: the first (highest) target QPS probed; None: the Offline samples/s (or the calibration's)
    target_qps: float | None = None
    #: Server search: stop when the gap between the best passing and the lowest failing target is below this
    #: fraction of the failing one
    search_tolerance: float = 0.1
    #: Server search: at most this many LoadGen runs
    max_probes: int = 8
    #: Offline: LoadGen issues ``expected_qps x min_duration x 1.1`` samples; None: calibrated (and one rerun with
    #: LoadGen's measured rate if the run came out shorter than ``min_duration_ms``)
    offline_expected_qps: float | None = None
    #: SingleStream: LoadGen pre-generates ``min_duration / expected latency`` queries; None: calibrated (ms)
    single_stream_expected_latency_ms: float | None = None
    #: samples held in memory for performance runs (None: all of the dataset that fits ``max_sample_memory_mb``)
    performance_sample_count: int | None = None
    #: memory cap for the preprocessed samples held in memory (MiB)
    max_sample_memory_mb: float = 2048.0
    #: postprocess every response with the recipe before reporting it complete (timed, as a deployment answers)
    postprocess: bool = True
    #: LoadGen's qsl, sample-index and schedule seeds
    seed: int = 0

    def validate(self) -> "LoadSettings":
        bad = []
        if self.min_duration_ms < 0:
            bad.append(f"min_duration_ms={self.min_duration_ms} (ms, >= 0)")
        if self.max_duration_ms < 0 or (self.max_duration_ms and self.max_duration_ms < self.min_duration_ms):
            bad.append(f"max_duration_ms={self.max_duration_ms} (ms, 0 for no cap, else >= min_duration_ms)")
        if self.min_query_count < 1:
            bad.append(f"min_query_count={self.min_query_count} (>= 1)")
        if self.server_min_query_count is not None and self.server_min_query_count < 1:
            bad.append(f"server_min_query_count={self.server_min_query_count} (>= 1)")
        if self.latency_bound_ms is not None and not self.latency_bound_ms > 0:
            bad.append(f"latency_bound_ms={self.latency_bound_ms} (ms, > 0)")
        if not 0.0 < self.latency_percentile < 1.0:
            bad.append(f"latency_percentile={self.latency_percentile} (between 0 and 1, e.g. 0.99)")
        if self.target_qps is not None and not self.target_qps > 0:
            bad.append(f"target_qps={self.target_qps} (> 0)")
        if not 0.0 < self.search_tolerance < 1.0:
            bad.append(f"search_tolerance={self.search_tolerance} (a fraction, e.g. 0.1)")
        if self.max_probes < 1:
            bad.append(f"max_probes={self.max_probes} (>= 1)")
        if self.offline_expected_qps is not None and not self.offline_expected_qps > 0:
            bad.append(f"offline_expected_qps={self.offline_expected_qps} (> 0)")
        if self.single_stream_expected_latency_ms is not None and not self.single_stream_expected_latency_ms > 0:
            bad.append(f"single_stream_expected_latency_ms={self.single_stream_expected_latency_ms} (ms, > 0)")
        if self.performance_sample_count is not None and self.performance_sample_count < 1:
            bad.append(f"performance_sample_count={self.performance_sample_count} (>= 1)")
        if bad:
            raise ZooinferError("bad LoadGen settings: " + "; ".join(bad))
        return self

    @classmethod
    def quick(cls, **overrides: Any) -> "LoadSettings":
        """Short runs for a notebook on the embedded sample or a smoke test (figures, not VALID results)."""
        base = dict(min_duration_ms=1000, max_duration_ms=20_000, min_query_count=16, max_probes=6)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def for_latency(cls, sample_latency_ms: float, budget_s: float = 120.0, **overrides: Any) -> "LoadSettings":
        """Settings sized so that SingleStream + Offline + a Server search on a session whose one-sample latency is
        ``sample_latency_ms`` take roughly ``budget_s`` seconds: fast models get LoadGen's early-stopping counts
        (64 SingleStream queries), slow ones (the heavy detectors on a few CPU cores) as few as 3 queries per run and
        3 Server probes -- figures, not VALID results."""
        lat = max(float(sample_latency_ms), 1e-3)
        probes = 6 if lat < 500 else 3
        per_run_ms = 1e3 * budget_s / (2 + probes)
        q = int(min(64, max(3, per_run_ms / lat)))
        base = dict(min_duration_ms=int(min(5000, per_run_ms / 2)), min_query_count=q,
                    server_min_query_count=int(min(32, max(3, q // 2))), max_probes=probes,
                    max_duration_ms=int(max(3 * per_run_ms, 5000, 4 * lat)))
        base.update(overrides)
        return cls(**base)
