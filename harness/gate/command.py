"""`harness gate RUN_DIR --rules gate.toml [--baseline ...] [--junit out.xml] [--slo ...]` (see the package doc)."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.analysis.rules import evaluate_checks, evaluate_rules
from harness.analysis.summary import parse_slo
from harness.gate.bootstrap import evaluate_regressions, read_run
from harness.gate.config import load_config
from harness.gate.report_junit import print_table, write_junit
from harness.usage import CliError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (records.jsonl) or a summary.json")
    p.add_argument("--rules", required=True, help="gate.toml: rules = [...], [regression.tolerance], slo")
    p.add_argument("--baseline", default=None, help="baseline run dir (records: bootstrap CIs) or summary.json")
    p.add_argument("--junit", default=None, metavar="OUT_XML", help="write JUnit XML here")
    p.add_argument("--slo", default=None, help="SLO for goodput (overrides the rules file's slo)")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.rules)
        slo = parse_slo(args.slo if args.slo is not None else cfg.slo)
        if not Path(args.run_dir).exists():
            raise ValueError(f"{args.run_dir}: no such run directory")
        cur = read_run(args.run_dir, slo)
        if cfg.regressions and args.baseline is None:
            raise ValueError("the rules have [regression.tolerance] entries but no --baseline was given")
        base = read_run(args.baseline, slo) if args.baseline else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    verdicts = evaluate_rules(cfg.rules, cur.summary) + evaluate_checks(cfg.checks, cur.summary)
    if base is not None:
        verdicts += evaluate_regressions(cur, base, cfg, slo)
    failed = sum(not v.passed for v in verdicts)
    print_table(verdicts, f"harness gate: {cur.source}" + (f" vs {base.source}" if base else ""))
    if args.junit:
        write_junit(verdicts, args.junit)
    print(f"{len(verdicts) - failed} passed, {failed} failed")
    return 1 if failed else 0
