"""`harness gate RUN_DIR --rules gate.toml [--baseline DIR_OR_SUMMARY] [--junit out.xml]`.

Two kinds of checks, both read only the analysis summary (and, for regressions, the records):

* **Bounds**: ``"<summary key> <op> <number>"`` with op one of ``<= < >= > == !=``, e.g.
  ``ttft_p95_ms <= 500``, ``overload_rate <= 0.01``, ``output_tokens_per_s >= 50``.
* **Regressions** against a baseline run, with a tolerance per key (``"10%"`` of the baseline value,
  or an absolute number in the key's unit). Judged with a bootstrap confidence interval so that noise
  alone does not fail a build: both runs' requests are resampled with replacement (inter-token gaps
  travel with their request, a cluster bootstrap), the statistic is recomputed on each resample with the
  same analysis code, and the percentile interval of ``current - baseline`` at the configured
  confidence (default 95 %) is formed. A key *regresses* only when the whole interval lies beyond
  the tolerance in the bad direction (higher for latencies and rates, lower for throughputs). A
  baseline given as ``summary.json`` (no records) is treated as exact: only the current run is resampled.

Exit status: 0 all checks pass, 1 some check fails, 2 bad input (one line on stderr).

Modules: the rule language is :mod:`harness.analysis.rules` (shared with Locust's ``--fail-on``);
:mod:`~harness.gate.config` reads gate.toml, :mod:`~harness.gate.bootstrap` judges regressions,
:mod:`~harness.gate.report_junit` prints the table and writes JUnit XML, :mod:`~harness.gate.command`
is the CLI.
"""

from harness.analysis.rules import OPS, Rule, Verdict, evaluate_rules, parse_rule
from harness.gate.bootstrap import RunData, bootstrap_diff, evaluate_regressions, read_run
from harness.gate.command import add_arguments, run
from harness.gate.config import GateConfig, Regression, load_config, parse_tolerance
from harness.gate.report_junit import print_table, write_junit

__all__ = ["OPS", "GateConfig", "Regression", "Rule", "RunData", "Verdict", "add_arguments", "bootstrap_diff",
           "evaluate_regressions", "evaluate_rules", "load_config", "parse_rule", "parse_tolerance", "print_table",
           "read_run", "run", "write_junit"]
