"""Scrape the target's Prometheus ``/metrics`` every second into ``RUN_DIR/server_metrics.jsonl``.

One JSON line per scrape: ``{"t_ns": <monotonic ns>, "metrics": {"name{labels}": value, ...}}``, where
``t_ns`` is the midpoint of the HTTP exchange on ``time.monotonic_ns`` - the clock of the request
records, so server queue and batch sizes line up with client latencies. A failed scrape writes
``{"t_ns": ..., "error": "..."}`` instead (target unreachable, no /metrics, bad text) and the scraper
carries on: missing metrics are noted, never fatal. Histogram ``_bucket`` series are not kept (their
``_sum``/``_count`` are).

Names: TGI (``tgi_queue_size``, ``tgi_batch_current_size``, ``tgi_request_*``) and vLLM
(``vllm:num_requests_waiting``, ``vllm:num_requests_running``, ...) as the server renders them. The file
is read back by :func:`harness.records.series`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from pathlib import Path

import httpx

from harness.records import SERVER_METRICS_FILE

_SKIP_PREFIXES = ("python_gc_", "python_info")


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text exposition -> ``{"name{labels}": value}``; comments, buckets and bad lines skipped."""
    out: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            close = line.rfind("}")
            if close < 0:
                continue
            key = line[: close + 1].replace(" ", "")
            name = key[: key.index("{")]
            rest = line[close + 1:].split()
        else:
            parts = line.split()
            key = name = parts[0]
            rest = parts[1:]
        if not rest or name.endswith("_bucket") or name.startswith(_SKIP_PREFIXES):
            continue
        try:
            value = float(rest[0])
        except ValueError:
            continue
        if math.isfinite(value):
            out[key] = value
    return out


class MetricsScraper:
    """Background scraper: ``MetricsScraper(base_url, run_dir).start()`` ... ``.stop()``; never raises."""

    def __init__(self, base_url: str, run_dir: str | os.PathLike[str], interval_s: float = 1.0,
                 path: str = "/metrics", timeout_s: float = 2.0, headers: dict[str, str] | None = None) -> None:
        self.url = base_url.rstrip("/") + path
        self.run_dir = Path(run_dir)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.headers = headers or {}
        self.scrapes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsScraper:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # one INFO line per scrape from httpx would flood Locust's console
        httpx_log = logging.getLogger("httpx")
        if httpx_log.getEffectiveLevel() < logging.WARNING:
            httpx_log.setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._loop, name="metrics-scraper", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> MetricsScraper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def scrape_once(self, client: httpx.Client) -> dict:
        """One scrape -> the line to write (``metrics`` or ``error``)."""
        t0 = time.monotonic_ns()
        try:
            resp = client.get(self.url, headers=self.headers)
            t1 = time.monotonic_ns()
            if resp.status_code != 200:
                return {"t_ns": (t0 + t1) // 2, "error": f"HTTP {resp.status_code} from {self.url}"}
            return {"t_ns": (t0 + t1) // 2, "metrics": parse_prometheus(resp.text)}
        except Exception as exc:  # noqa: BLE001 - never fatal: noted in the file
            return {"t_ns": time.monotonic_ns(), "error": f"{type(exc).__name__}: {exc} ({self.url})"}

    def _loop(self) -> None:
        try:
            fh = open(self.run_dir / SERVER_METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        except OSError:
            return
        next_t = time.monotonic()
        with fh, httpx.Client(timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                line = self.scrape_once(client)
                self.scrapes += 1
                self.failures += "error" in line
                try:
                    fh.write(json.dumps(line, separators=(",", ":")) + "\n")
                    fh.flush()
                except OSError:
                    return
                next_t += self.interval_s
                self._stop.wait(max(0.0, next_t - time.monotonic()))
