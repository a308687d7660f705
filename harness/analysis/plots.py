"""Report plots (matplotlib Agg, PNG): every figure titled, every axis with its unit.

Each function writes one PNG and returns a :class:`Plot` naming the series it drew, so tests (and the
HTML report) can tell what is in it. The steady window is shaded on every time axis.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness import metrics as m  # noqa: E402
from harness.analysis.frame import OUTCOMES, RunFrame  # noqa: E402
from harness.analysis.steady import SteadyWindow  # noqa: E402
from harness.analysis.timeseries import TimeSeries  # noqa: E402

CDF_POINTS = 2000
#: above this many values a CDF is drawn from an evenly strided sample (display only; summary.json is exact)
CDF_EXACT_MAX = 2_000_000
GANTT_SAMPLE = 60
SCATTER_SAMPLE = 5000
DPI = 80


@dataclass
class Plot:
    path: Path
    title: str
    series: list[str] = field(default_factory=list)


def _save(fig, path: Path, title: str, series: list[str]) -> Plot:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Plot(path, title, series)


def _shade(ax, window: SteadyWindow | None, t0_ns: int) -> None:
    if window is not None:
        a, b = (window.start_ns - t0_ns) / m.NS_PER_S, (window.end_ns - t0_ns) / m.NS_PER_S
        ax.axvspan(a, b, color="tab:green", alpha=0.08, label="steady window" if window.detected else "whole run")


def _cdf_xy(sorted_v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(sorted_v)
    idx = np.unique(np.linspace(0, n - 1, min(n, CDF_POINTS)).astype(np.int64))
    return sorted_v[idx], (idx + 1) / n


def latency_cdfs(frame: RunFrame, out: Path) -> Plot:
    """CDFs of TTFT, ITL, TPOT and E2E (ok requests; ITL over all gaps)."""
    ok = frame.cols["ok"]
    panels = []
    for name, v in [("ttft", frame.cols["ttft"][ok]), ("itl", frame.gaps["itl"]),
                    ("tpot", frame.cols["tpot"][ok]), ("e2e", frame.cols["e2e"][ok])]:
        v = v[~np.isnan(v)]
        n = len(v)
        sampled = n > CDF_EXACT_MAX
        v = np.sort(v[:: int(np.ceil(n / CDF_EXACT_MAX))] if sampled else v)
        if not n:
            panels.append((name, v, v, None, None, 0, ""))
            continue
        x, y = _cdf_xy(v)
        panels.append((name, x, y, m.percentile(v, 50.0), m.percentile(v, 99.0), n, ", sampled" if sampled else ""))
    return draw_cdfs(panels, out)


#: one CDF panel: (metric, x values (ms), fraction <= x, p50, p99, values, title note)
CdfPanel = tuple[str, np.ndarray, np.ndarray, "float | None", "float | None", int, str]


def draw_cdfs(panels: list[CdfPanel], out: Path) -> Plot:
    """The 2x2 latency CDF figure from ready panels (exact values or an HdrHistogram's buckets)."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    series = []
    for ax, (name, x, y, p50, p99, n, note) in zip(axes.flat, panels, strict=True):
        ax.set_title(f"{name.upper()} CDF ({n:,} {'gaps' if name == 'itl' else 'requests'}{note})")
        ax.set_xlabel(f"{name.upper()} (ms)")
        ax.set_ylabel("fraction ≤ x")
        ax.grid(alpha=0.3)
        if not n:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.plot(x, y, label=name)
        for p, v, style in ((50.0, p50, ":"), (99.0, p99, "--")):
            ax.axvline(v, color="grey", ls=style, lw=1, label=f"p{p:g} {v:.1f} ms")
        if x[0] > 0 and x[-1] / x[0] > 100:
            ax.set_xscale("log")
        ax.legend(fontsize=8, loc="lower right")
        series.append(name)
    fig.suptitle("Latency distributions (ok requests)")
    return _save(fig, out / "latency_cdf.png", "Latency CDFs", series)


def time_series(ts: TimeSeries, window: SteadyWindow | None, out: Path) -> Plot:
    """Per-second requests sent/completed, in flight, output tokens/s, TTFT p50/p99, overload rate."""
    fig, axes = plt.subplots(5, 1, figsize=(10, 12), sharex=True)
    t = ts.t_s
    a = axes[0]
    a.plot(t, ts.sent, label="sent", drawstyle="steps-post", lw=2.5, alpha=0.6)
    a.plot(t, ts.completed, label="completed ok", drawstyle="steps-post", ls="--")
    a.plot(t, ts.failed, label="failed", drawstyle="steps-post", color="tab:red")
    a.set_ylabel("requests/s")
    a.set_title("Requests sent and completed per second")
    axes[1].plot(t, ts.in_flight, label="in flight", color="tab:purple")
    axes[1].set_ylabel("requests")
    axes[1].set_title("Requests in flight (time-averaged per second)")
    axes[2].plot(t, ts.output_tokens_per_s, label="output tokens/s", color="tab:orange")
    axes[2].set_ylabel("tokens/s")
    axes[2].set_title("Output tokens per second (ok requests, by token arrival)")
    axes[3].plot(t, ts.ttft_p50_ms, label="TTFT p50", marker=".", ms=3)
    axes[3].plot(t, ts.ttft_p99_ms, label="TTFT p99", marker=".", ms=3)
    axes[3].set_ylabel("ms")
    axes[3].set_title("TTFT per second of send")
    axes[4].plot(t, ts.overload_rate, label="overload rate", color="tab:red", marker=".", ms=3)
    axes[4].set_ylabel("fraction")
    axes[4].set_ylim(-0.02, 1.02)
    axes[4].set_title("Overload rate (overloaded / attempted, per second of send)")
    axes[4].set_xlabel("time since first send (s)")
    for ax in axes:
        _shade(ax, window, ts.t0_ns)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    return _save(fig, out / "timeseries.png", "Per-second time series",
                 ["sent", "completed ok", "failed", "in flight", "output tokens/s", "TTFT p50", "TTFT p99",
                  "overload rate"])


def outcomes(counts: dict[str, int], out: Path) -> Plot:
    """Requests per outcome class (whole run), each bar labelled with its count and share of all requests.

    At least 2.4 inches tall, so a run with one or two classes still shows bars, not a hairline."""
    items = [(k, v) for k, v in counts.items() if v] or [("ok", 0)]
    total = sum(v for _, v in items)
    fig, ax = plt.subplots(figsize=(8, max(2.4, 0.9 + 0.5 * len(items))))
    names = [k for k, _ in items]
    colors = ["tab:green" if k == "ok" else "tab:red" if k == "overloaded" else "tab:grey" for k in names]
    ax.barh(names, [v for _, v in items], color=colors, height=0.6)
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:,} ({v / total:.1%})" if total else " 0", va="center", fontsize=9)
    ax.set_ylim(len(items) - 0.4, -0.6)  # inverted, half a bar of margin either side
    ax.set_xlim(0, max(total, 1) * 1.25)  # room for the labels
    ax.set_xlabel("requests")
    ax.set_title("Outcome breakdown (whole run)")
    return _save(fig, out / "outcomes.png", "Outcome breakdown", names)


def timeline(frame: RunFrame, window: SteadyWindow | None, t0_ns: int, out: Path, total: int | None = None) -> Plot:
    """Gantt of a sample of requests: send -> first token (TTFT) and first token -> end (stream).

    ``total``: the run's requests when ``frame`` holds only some of them (a large run)."""
    c = frame.cols
    rows = np.flatnonzero((c["send_ns"] >= 0) & (c["end_ns"] >= 0))
    rows = rows[np.argsort(c["send_ns"][rows], kind="stable")]
    if len(rows) > GANTT_SAMPLE:
        rows = rows[np.linspace(0, len(rows) - 1, GANTT_SAMPLE).astype(np.int64)]
    fig, ax = plt.subplots(figsize=(10, 0.6 + 0.13 * max(len(rows), 10)))
    s = (c["send_ns"][rows] - t0_ns) / m.NS_PER_S
    e = (c["end_ns"][rows] - t0_ns) / m.NS_PER_S
    f = np.where(c["first_token_ns"][rows] >= 0, (c["first_token_ns"][rows] - t0_ns) / m.NS_PER_S, np.nan)
    ok = c["ok"][rows]
    y = np.arange(len(rows))
    has_tok = ~np.isnan(f)
    ax.barh(y[has_tok], (f - s)[has_tok], left=s[has_tok], color="tab:orange", label="TTFT (send → first token)")
    ax.barh(y[has_tok & ok], (e - f)[has_tok & ok], left=f[has_tok & ok], color="tab:blue",
            label="stream (first token → end)")
    bad = ~ok
    ax.barh(y[bad], np.maximum(e - s, 1e-3)[bad], left=s[bad], color="tab:red", label="failed request")
    _shade(ax, window, t0_ns)
    ax.invert_yaxis()
    ax.set_xlabel("time since first send (s)")
    ax.set_ylabel("request (sample, by send time)")
    ax.set_title(f"Per-request timeline ({len(rows)} of {total if total is not None else len(frame):,} requests)")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, out / "timeline.png", "Per-request timeline", ["TTFT", "stream", "failed"])


def token_agreement(frame: RunFrame, out: Path, rate: float | None = None) -> Plot:
    """Server-reported vs client-counted output tokens per ok request.

    ``rate``: the run's token mismatch rate when ``frame`` holds a sample of its requests (a large run)."""
    c = frame.cols
    srv = c["output_tokens_server"]
    cli = np.where(np.isnan(c["output_tokens_retokenized"]), c["output_tokens_events"], c["output_tokens_retokenized"])
    rows = np.flatnonzero(c["ok"] & ~np.isnan(srv))
    fig, ax = plt.subplots(figsize=(6, 5))
    if len(rows) > SCATTER_SAMPLE:
        rows = rows[np.linspace(0, len(rows) - 1, SCATTER_SAMPLE).astype(np.int64)]
    if len(rows):
        ax.scatter(srv[rows], cli[rows], s=6, alpha=0.4, label="requests")
        hi = float(max(srv[rows].max(), cli[rows].max(), 1))
        ax.plot([0, hi], [0, hi], color="grey", lw=1, ls="--", label="agreement")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "the server reported no token counts", ha="center", va="center", transform=ax.transAxes)
    rate = m.token_mismatch_rate(frame.records) if rate is None else rate
    ax.set_xlabel("server-reported output tokens (tokens)")
    ax.set_ylabel("client-counted output tokens (tokens)")
    ax.set_title(f"Token-count agreement (mismatch rate {rate:.2%})")
    return _save(fig, out / "tokens.png", "Token-count agreement", ["requests", "agreement"] if len(rows) else [])


def server_vs_client(server: dict[str, tuple[str, list[int], list[float]]], ts: TimeSeries,
                     window: SteadyWindow | None, out: Path) -> Plot | None:
    """Scraped server queue and batch size beside client TTFT, on the same clock; None if nothing scraped."""
    present = {k: v for k, v in server.items() if v[0] is not None}
    if not present:
        return None
    fig, axes = plt.subplots(len(present) + 1, 1, figsize=(10, 2.6 * (len(present) + 1)), sharex=True)
    series = []
    for ax, (label, (name, t_ns, vals)) in zip(axes, present.items(), strict=False):
        x = (np.asarray(t_ns, dtype=np.int64) - ts.t0_ns) / m.NS_PER_S
        ax.plot(x, vals, drawstyle="steps-post", label=f"{label} ({name})")
        ax.set_ylabel("requests")
        ax.set_title(f"Server {label} (scraped /metrics)")
        series.append(label)
    a = axes[-1]
    a.plot(ts.t_s, ts.ttft_p50_ms, label="client TTFT p50", marker=".", ms=3)
    a.plot(ts.t_s, ts.ttft_p99_ms, label="client TTFT p99", marker=".", ms=3)
    a.set_ylabel("ms")
    a.set_title("Client TTFT per second of send")
    a.set_xlabel("time since first send (s)")
    series += ["client TTFT p50", "client TTFT p99"]
    for ax in axes:
        _shade(ax, window, ts.t0_ns)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    return _save(fig, out / "server.png", "Server queue and batch vs client latency", series)


#: extra plots of every report: ``fn(frame, out_dir) -> Plot | None`` (None: nothing to show for this run)
PlotFn = Callable[[RunFrame, Path], "Plot | None"]
EXTRA_PLOTS: dict[str, PlotFn] = {}


def register_plot(name: str, fn: PlotFn) -> PlotFn:
    """Add a plot to every report (the public extension point); ``fn(frame, out_dir)`` saves a PNG under
    ``out_dir`` and returns its :class:`Plot` (see :func:`_save`), or None. ValueError when ``name`` is taken."""
    if name in EXTRA_PLOTS:
        raise ValueError(f"plot {name!r} already registered")
    EXTRA_PLOTS[name] = fn
    return fn


def save_figure(fig, path: Path, title: str, series: list[str]) -> Plot:
    """Save a matplotlib figure as a report plot (PNG, closed afterwards)."""
    return _save(fig, path, title, series)


def ensure_dir(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


__all__ = ["OUTCOMES", "Plot", "latency_cdfs", "time_series", "outcomes", "timeline", "token_agreement",
           "server_vs_client", "ensure_dir"]
