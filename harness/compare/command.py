"""`harness compare RUN_OR_SWEEP ...`: the CLI, the console table, compare.md and compare.html."""

from __future__ import annotations

import argparse
import json
import time
from html import escape
from pathlib import Path

from harness.analysis.html import CSS, fmt, img_tag, table
from harness.compare.deltas import Delta, compare_keys, deltas, settings_diff
from harness.compare.plots import FRONT_AXES, pareto_front, plot_cdfs, plot_fronts, sweep_points
from harness.gate.bootstrap import read_run
from harness.usage import CliError

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="RUN_OR_SWEEP",
                   help="two or more run dirs (the first is the baseline) or two or more sweep dirs")
    p.add_argument("--label", action="append", default=[],
                   help="a label per path, in order (default: the directory names)")
    p.add_argument("--confidence", type=float, default=0.95, help="bootstrap interval confidence (default 0.95)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--out", default=None, help="output directory (default ./reports/compare/<timestamp>)")


def _kind(p: Path) -> str:
    if (p / "sweep.json").is_file():
        return "sweep"
    if p.is_dir() and ((p / "records.jsonl").is_file() or (p / "summary.json").is_file()):
        return "run"
    raise CliError(f"{p}: neither a run dir (records.jsonl or summary.json) nor a sweep dir (sweep.json)")


def _val(d: Delta, v: float | None) -> str:
    return "–" if v is None else f"{v:.4g}"


def _ci(d: Delta) -> str:
    return "–" if d.ci is None else f"[{d.ci[0]:+.3g}, {d.ci[1]:+.3g}]"


def _runs(args: argparse.Namespace, paths: list[Path], labels: list[str], out: Path) -> dict:
    try:
        runs = [(lab, read_run(p, None)) for lab, p in zip(labels, paths, strict=True)]
    except ValueError as exc:
        raise CliError(str(exc)) from None
    keys = compare_keys()
    base_label, base = runs[0]
    comparisons = []
    for lab, cur in runs[1:]:
        ds = deltas(base, cur, keys, args.confidence, args.resamples, args.seed)
        comparisons.append({"label": lab, "deltas": ds})
    diff = settings_diff(paths)
    cdf = plot_cdfs(runs, out / "cdfs.png")
    # console and markdown: one table per comparison
    md = [f"# Compare: {' vs '.join(labels)}", "",
          f"Baseline: **{base_label}**. Change = run - baseline, {args.confidence:.0%} bootstrap interval; "
          "worse/better when the interval excludes zero.", ""]
    if diff:
        md += ["Settings that differ:", "", *(f"- `{line}`" for line in diff), ""]
    html = [f"<h1>Compare: {escape(' vs '.join(labels))}</h1>",
            f'<p class="sub">baseline <b>{escape(base_label)}</b>; change = run - baseline with a '
            f"{args.confidence:.0%} bootstrap interval ({args.resamples} resamples); <span class='bad'>worse</span>"
            " / <span class='good'>better</span> when the interval excludes zero</p>"]
    if diff:
        html.append('<p class="note">Settings that differ: ' + "; ".join(f"<code>{escape(x)}</code>" for x in diff) + "</p>")
    for comp in comparisons:
        ds = [d for d in comp["deltas"] if d.verdict != "n/a"]
        head = ["metric", "unit", base_label, comp["label"], "change", "interval", "verdict"]
        rows = [[d.label, d.unit, _val(d, d.baseline), _val(d, d.current), _val(d, d.change), _ci(d), d.verdict]
                for d in ds]
        print(f"\n{comp['label']} vs {base_label}")
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        for r in [head, *rows]:
            print("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
        md += [f"## {comp['label']} vs {base_label}", "", "| " + " | ".join(head) + " |",
               "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows), ""]
        cls = {"worse": "bad", "better": "good"}
        html.append(f"<h2>{escape(comp['label'])} vs {escape(base_label)}</h2>" + table(
            head, [[escape(d.label), d.unit, fmt(d.baseline, 2), fmt(d.current, 2),
                    "–" if d.change is None else f"{d.change:+.3g}", _ci(d),
                    f'<b class="{cls.get(d.verdict, "")}">{d.verdict}</b>'] for d in ds]))
    if cdf is not None:
        html.append("<h2>Latency CDFs</h2>" + img_tag(cdf, "latency CDFs"))
    if diff:
        print("\nsettings that differ:\n  " + "\n  ".join(diff))
    return {"kind": "runs", "labels": labels, "baseline": base_label, "settings_diff": diff,
            "comparisons": [{"label": c["label"], "deltas": [d.as_dict() for d in c["deltas"]]}
                            for c in comparisons], "_md": md, "_html": html}


def _sweeps(paths: list[Path], labels: list[str], out: Path) -> dict:
    sweeps = []
    for lab, p in zip(labels, paths, strict=True):
        try:
            sweeps.append((lab, json.loads((p / "sweep.json").read_text())))
        except (OSError, json.JSONDecodeError) as exc:
            raise CliError(f"{p / 'sweep.json'}: unreadable ({exc})") from None
    png = plot_fronts(sweeps, out / "pareto.png")
    fronts = {key: {lab: pareto_front(sweep_points(s, key)) for lab, s in sweeps} for key, _ in FRONT_AXES}
    md = [f"# Compare sweeps: {' vs '.join(labels)}", "", "Pareto fronts (latency ms, output tokens/s):", ""]
    for key, per in fronts.items():
        md.append(f"## tokens/s vs {key}")
        md += [f"- {lab}: " + ", ".join(f"({x:.4g}, {y:.4g})" for x, y in pts) for lab, pts in per.items()]
        md.append("")
        for lab, pts in per.items():
            print(f"{lab}: front on tokens/s vs {key}: " + ", ".join(f"({x:.4g} ms, {y:.4g} tok/s)" for x, y in pts))
    html = [f"<h1>Compare sweeps: {escape(' vs '.join(labels))}</h1>",
            '<p class="sub">each sweep\'s points (faint) and its Pareto front: no other point of the sweep has '
            "both lower latency and higher output tokens/s</p>", img_tag(png, "Pareto fronts")]
    return {"kind": "sweeps", "labels": labels, "fronts": fronts, "_md": md, "_html": html}


def run(args: argparse.Namespace) -> int:
    paths = [Path(p).resolve() for p in args.paths]
    if len(paths) < 2:
        raise CliError("give two or more run dirs or two or more sweep dirs")
    kinds = {_kind(p) for p in paths}
    if len(kinds) > 1:
        raise CliError("mix of runs and sweeps: compare runs with runs, sweeps with sweeps")
    if args.label and len(args.label) != len(paths):
        raise CliError(f"--label given {len(args.label)} times for {len(paths)} paths; give one per path or none")
    if not 0.5 <= args.confidence < 1 or args.resamples < 50:
        raise CliError("--confidence must be in [0.5, 1) and --resamples >= 50")
    labels = args.label or [p.name for p in paths]
    if len(set(labels)) != len(labels):
        labels = [f"{i + 1}:{lab}" for i, lab in enumerate(labels)]
    out = Path(args.out or Path("reports") / "compare" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = _runs(args, paths, labels, out) if kinds == {"run"} else _sweeps(paths, labels, out)
    md, html = data.pop("_md"), data.pop("_html")
    (out / "compare.json").write_text(json.dumps(data, indent=2, default=str))
    (out / "compare.md").write_text("\n".join(md) + "\n")
    (out / "compare.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>compare</title><style>{CSS}</style></head>"
        f"<body>{''.join(html)}</body></html>", encoding="utf-8")
    print(f"\ncompare report: {out / 'compare.html'}")
    return 0


