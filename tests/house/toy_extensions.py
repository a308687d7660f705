"""One toy extension of each kind, registered through the public extension points (docs/extending.md).

Importing this module registers them; :func:`unregister` takes them out again (tests share a process).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from harness import metrics as m
from harness.analysis.plots import Plot, register_plot, save_figure
from harness.analysis.rules import CHECKS, Verdict, register_check
from harness.client import PROTOCOLS, TgiClient, register_protocol
from harness.workload import ARRIVALS, register_arrival

# 1. a protocol: TGI's compat route "/" (a client that posts to "/" with "stream": true)


class TgiCompatClient(TgiClient):
    protocol = "toy_tgi_compat"
    default_endpoint = "/"


register_protocol("toy_tgi_compat", TgiCompatClient)


# 2. an arrival process: pairs of requests, the pairs evenly spaced at rate/2 per second


def _pairs(rate: float, rng: random.Random, cv: float) -> Iterator[float]:
    i = 0
    while True:
        i += 1
        t = 2 * i / rate
        yield t
        yield t


register_arrival("toy_pairs", _pairs)


# 3. a run metric: share of ok requests among all requests


def ok_share(records) -> float:
    """Ok share, fraction: ``ok requests / requests``; 0 without requests."""
    return sum(1 for r in records if r.ok) / len(records) if records else 0.0


m.register_metric(m.MetricDef("toy_ok_share", "fraction", "run", ok_share, label="ok share", better="higher",
                              card="ok share (toy)"))


# 4. a plot: histogram of E2E latency of ok requests


def e2e_histogram(frame, out: Path) -> Plot | None:
    import matplotlib.pyplot as plt
    import numpy as np

    v = frame.cols["e2e"][frame.cols["ok"].astype(bool)]
    v = v[~np.isnan(v)]
    if not len(v):
        return None
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(v, bins=30)
    ax.set_xlabel("E2E (ms)")
    return save_figure(fig, out / "toy_e2e_hist.png", "E2E histogram (toy)", ["e2e"])


register_plot("toy_e2e_hist", e2e_histogram)


# 5. a gate check: no request timed out


def no_timeouts(summary: dict) -> Verdict:
    n = (summary.get("outcomes") or {}).get("timeout", 0)
    return Verdict("toy_no_timeouts", "outcomes.timeout", n == 0, float(n), "== 0", kind="check")


register_check("toy_no_timeouts", no_timeouts)


def unregister() -> None:
    from harness.analysis.plots import EXTRA_PLOTS

    PROTOCOLS.pop("toy_tgi_compat", None)
    ARRIVALS.pop("toy_pairs", None)
    m.METRICS.pop("toy_ok_share", None)
    EXTRA_PLOTS.pop("toy_e2e_hist", None)
    CHECKS.pop("toy_no_timeouts", None)
