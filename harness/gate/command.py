"""`harness gate RUN_DIR --rules gate.toml [--baseline ...] [--junit out.xml] [--slo ...] [--allow-incomplete]`
(see the package doc).

Without ``--baseline`` the rules file's ``[regression.tolerance]`` entries are skipped with a note (the
bounds are still judged), so one rules file serves single runs and comparisons. A run whose run.json
says it did not end normally (``interrupted``, or ``complete: false``) fails the gate with a "run
complete" check unless ``--allow-incomplete`` is given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.analysis.rules import Verdict, evaluate_checks, evaluate_rules
from harness.analysis.summary import parse_slo, run_state
from harness.gate.bootstrap import evaluate_regressions, read_run
from harness.gate.config import load_config
from harness.gate.report_junit import print_table, write_junit
from harness.usage import CliError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (records.jsonl) or a summary.json")
    p.add_argument("--rules", required=True, help="gate.toml: rules = [...], [regression.tolerance], slo")
    p.add_argument("--baseline", default=None,
                   help="baseline run dir (records: bootstrap CIs) or summary.json; without it the rules file's "
                        "[regression.tolerance] entries are skipped with a note")
    p.add_argument("--junit", default=None, metavar="OUT_XML", help="write JUnit XML here")
    p.add_argument("--slo", default=None, help="SLO for goodput (overrides the rules file's slo)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="judge an interrupted or incomplete run (run.json complete: false) without failing "
                        "for that; by default such a run fails the gate")


def state_verdict(run_path: str | Path, allow_incomplete: bool) -> Verdict | None:
    """The "run complete" check from run.json beside the run (or a summary.json's ``run`` entry);
    None when the run ended normally or its state is not recorded."""
    p = Path(run_path)
    meta: dict = {}
    for source, part in ((p if p.is_dir() else p.parent) / "run.json", None), (p, "run"):
        try:
            data = json.loads(source.read_text()) if source.is_file() else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            data = {}
        meta = (data.get(part) if part else data) if isinstance(data, dict) else None
        if isinstance(meta, dict) and meta:
            break
    state = run_state(meta)
    if state is None:
        return None
    how = "allowed by --allow-incomplete" if allow_incomplete else "pass --allow-incomplete to judge it anyway"
    return Verdict("run complete", "complete", allow_incomplete, None, "a complete run", f"{state} ({how})",
                   "state")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.rules)
        slo = parse_slo(args.slo if args.slo is not None else cfg.slo)
        if not Path(args.run_dir).exists():
            raise ValueError(f"{args.run_dir}: no such run directory")
        cur = read_run(args.run_dir, slo)
        if args.baseline is None and cfg.regressions and not (cfg.rules or cfg.checks):
            raise ValueError("the rules file has only [regression.tolerance] entries and no --baseline was given: "
                             "nothing to check")
        base = read_run(args.baseline, slo) if args.baseline else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    state = state_verdict(args.run_dir, args.allow_incomplete)
    verdicts = [state] if state is not None else []
    verdicts += evaluate_rules(cfg.rules, cur.summary) + evaluate_checks(cfg.checks, cur.summary)
    if base is not None:
        verdicts += evaluate_regressions(cur, base, cfg, slo)
    failed = sum(not v.passed for v in verdicts)
    print_table(verdicts, f"harness gate: {cur.source}" + (f" vs {base.source}" if base else ""))
    if base is None and cfg.regressions:
        print(f"note: no --baseline, so the {len(cfg.regressions)} [regression.tolerance] rule(s) were skipped "
              f"({', '.join(r.metric for r in cfg.regressions)}); give --baseline RUN_DIR to judge them")
    if args.junit:
        write_junit(verdicts, args.junit)
    print(f"{len(verdicts) - failed} passed, {failed} failed")
    return 1 if failed else 0
