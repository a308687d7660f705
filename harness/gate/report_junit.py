"""The gate's verdicts as a rich table on the console and as JUnit XML."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from harness.analysis.rules import Verdict


def print_table(verdicts: Sequence[Verdict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("check", "value", "required", "verdict", "detail"):
        t.add_column(col, overflow="fold")
    for v in verdicts:
        t.add_row(v.name, "-" if v.value is None else f"{v.value:.4g}", v.expected,
                  "[green]PASS[/green]" if v.passed else "[bold red]FAIL[/bold red]", v.detail)
    Console(width=140).print(t)


def write_junit(verdicts: Sequence[Verdict], path: str | Path, suite: str = "harness gate") -> Path:
    """JUnit XML: one testcase per check, a <failure> for each failed one."""
    fails = sum(not v.passed for v in verdicts)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuites><testsuite name={quoteattr(suite)} tests="{len(verdicts)}" failures="{fails}" errors="0">']
    for v in verdicts:
        case = f'<testcase classname={quoteattr("gate." + v.kind)} name={quoteattr(v.name)}'
        msg = f"value {v.value if v.value is not None else 'missing'}, required {v.expected}. {v.detail}".strip()
        if v.passed:
            lines.append(f"{case}><system-out>{escape(msg)}</system-out></testcase>")
        else:
            lines.append(f"{case}><failure message={quoteattr(msg)}>{escape(msg)}</failure></testcase>")
    lines.append("</testsuite></testsuites>")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p
