"""`harness sweep`: server concurrency caps x offered load, one headless Locust run per point.

For each cap the bundled server (``python -m harness serve --model M --max-concurrent-requests CAP``,
or ``--server-cmd`` with ``{port}`` and ``{cap}``) is started on a free loopback port and stopped
after that cap's load points (``--restart-each-point``: restarted for every point). Against an
external ``--host`` only the load axis is swept. Each point runs ``locust --headless`` as a
subprocess into its own run dir (kept), is analysed like ``harness report`` (steady window, at
least ``--warmup`` seconds cut) and gets a ``point.json`` completion marker; a rerun of the same
sweep skips completed points (resume), and a rerun with other settings refuses with their diff
(``OUT/sweep-settings.json``; ``--restart`` discards the points). Each point's verdict is ``pass``,
``fail`` or ``inconclusive`` (too few ok requests, a short steady window, or failures:
harness.analysis.capacity), printed as one line when the point ends. At the end ``sweep.json`` and ``sweep.html`` hold the
percentiles, throughput, overload rate and goodput vs load per cap, the capacity table and the
recommended cap (harness.analysis.capacity). Closed-loop users back off after failed or refused
requests (``--failure-backoff`` of the scenario, default 0.1,5 s), so users above a cap show the overload
without flooding the server; a point whose attempts mostly failed for another reason than overload is
reported as inconclusive, never as a capacity figure, and is printed first.

Modules: :mod:`~harness.sweep.plan` (arguments -> plan), :mod:`~harness.sweep.points` (one point's
commands, run and analysis), :mod:`~harness.sweep.command` (the CLI and the loop); the report is
:mod:`harness.analysis.sweep_report`. Servers start through :class:`harness.server_process.ServerProcess`;
every process runs in its own output directory, so the sweep works from any directory and writes only
under ``--out`` (default ``./reports/sweeps/<timestamp>``).
"""

from harness.sweep.command import add_arguments, run, run_sweep
from harness.sweep.plan import SweepPlan, make_plan, parse_list
from harness.sweep.points import POINT_FILE, completed_point, locust_command, run_point, server_command

__all__ = ["POINT_FILE", "SweepPlan", "add_arguments", "completed_point", "locust_command", "make_plan", "parse_list",
           "run", "run_point", "run_sweep", "server_command"]
