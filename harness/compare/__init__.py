"""`harness compare RUN_OR_SWEEP ...`: two or more runs, or two or more sweeps, side by side.

Runs: the first is the baseline; per metric (latency percentiles and the dictionary's run metrics with
a direction) the change with a bootstrap interval and a better/worse/no-change verdict
(:mod:`~harness.compare.deltas`, on the gate's :mod:`harness.gate.bootstrap`), overlaid latency CDFs,
and the settings that differ between the runs. Sweeps: each sweep's throughput-vs-latency Pareto front
on one plot (:mod:`~harness.compare.plots`). Writes compare.html (self-contained), compare.md and
compare.json under ``--out``; prints the table.
"""

from harness.compare.command import add_arguments, run
from harness.compare.deltas import Delta, compare_keys, deltas, settings_diff, verdict
from harness.compare.plots import pareto_front

__all__ = ["Delta", "add_arguments", "compare_keys", "deltas", "pareto_front", "run", "settings_diff", "verdict"]
