"""`harness comply`: an endpoint against MLPerf Inference's server-scenario latency constraints.

A ruleset (:mod:`~harness.comply.rulesets`: TTFT and TPOT limits at the 99th percentile, minimum
duration and query count) per model and scenario; an open-loop Poisson run at a rate on the sweep's
point runner (:func:`harness.sweep.points.run_point`, the packaged ``open_loop`` Locust scenario);
the verdict (:mod:`~harness.comply.judge`: latency from the scheduled send, p99 against the limits,
minimums, MLPerf's early-stopping test in :mod:`~harness.comply.early_stopping`) and, with
``--find-max-rate``, the highest VALID rate (bracket + bisect, :func:`~harness.comply.command.find_max_rate`).
It checks an endpoint against MLPerf's published constraints; it is not an MLPerf submission.
"""

from harness.comply.command import add_arguments, find_max_rate, run
from harness.comply.early_stopping import early_stopping_passes, min_passing_queries, odds
from harness.comply.judge import Verdict, judge
from harness.comply.rulesets import Ruleset, load_ruleset, packaged

__all__ = ["Ruleset", "Verdict", "add_arguments", "early_stopping_passes", "find_max_rate", "judge",
           "load_ruleset", "min_passing_queries", "odds", "packaged", "run"]
