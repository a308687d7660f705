"""compare's plots: overlaid latency CDFs of runs, and throughput-vs-latency Pareto fronts of sweeps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness.gate.bootstrap import RunData  # noqa: E402

__all__ = ["FRONT_AXES", "pareto_front", "plot_cdfs", "plot_fronts", "sweep_points"]

DPI = 80
#: (latency key on x, its label) of the Pareto plots; throughput (output tokens/s) is on y
FRONT_AXES: tuple[tuple[str, str], ...] = (("ttft_p95_ms", "TTFT p95 (ms)"), ("itl_p99_ms", "ITL p99 (ms)"))
THROUGHPUT = "output_tokens_per_s"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points (latency, throughput) no other point beats on both (lower latency and higher
    throughput, one strictly), sorted by latency; ties keep one copy."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(set(points), key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def sweep_points(sweep: dict, x_key: str) -> list[tuple[float, float]]:
    """(latency, output tokens/s) of every complete point of a sweep.json that has both."""
    out = []
    for p in sweep.get("points", []):
        s = p.get("summary") or {}
        x, y = s.get(x_key), s.get(THROUGHPUT)
        if p.get("complete") and isinstance(x, int | float) and isinstance(y, int | float):
            out.append((float(x), float(y)))
    return out


def plot_fronts(sweeps: Sequence[tuple[str, dict]], out: Path) -> Path:
    """One panel per :data:`FRONT_AXES`: each sweep's points (faint) and its Pareto front (line)."""
    fig, axes = plt.subplots(1, len(FRONT_AXES), figsize=(6 * len(FRONT_AXES), 4.2))
    for ax, (key, xlabel) in zip(np.atleast_1d(axes), FRONT_AXES, strict=True):
        for i, (label, sweep) in enumerate(sweeps):
            pts = sweep_points(sweep, key)
            if not pts:
                continue
            color = f"C{i % 10}"
            ax.scatter(*zip(*pts, strict=True), color=color, alpha=0.35, s=18)
            front = pareto_front(pts)
            ax.plot(*zip(*front, strict=True), color=color, marker="o", drawstyle="steps-post",
                    label=f"{label} ({len(front)} on the front)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("output tokens/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("throughput vs latency: Pareto fronts (up and left is better)")
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def _values(run: RunData, name: str) -> np.ndarray:
    f = run.frame
    if f is None:
        return np.array([])
    if name in f.gaps:
        return np.asarray(f.gaps[name], dtype=float)
    v = np.asarray(f.cols[name][f.cols["ok"]], dtype=float)
    return v[~np.isnan(v)]


def plot_cdfs(runs: Sequence[tuple[str, RunData]], out: Path) -> Path | None:
    """Overlaid empirical CDFs of TTFT, ITL, TPOT and E2E (ms) of runs with records; None when none has."""
    if not any(r.frame is not None for _, r in runs):
        return None
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, name in zip(axes, ("ttft", "itl", "tpot", "e2e"), strict=True):
        for i, (label, run) in enumerate(runs):
            v = np.sort(_values(run, name))
            if len(v):
                ax.plot(v, np.arange(1, len(v) + 1) / len(v), color=f"C{i % 10}", label=label)
        ax.set_xlabel(f"{name.upper()} (ms)")
        ax.set_ylabel("fraction <= x")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out
