"""The packaged Locust scenarios (locustfiles), and `harness scenarios`, which lists them and their paths.

The files of this package are plain locustfiles; in a checkout ``scenarios/`` is a link to this folder,
so ``locust -f scenarios/chat_stream.py`` works there, and from an installed package:

    locust -f "$(harness scenarios --path chat_stream)" --host http://127.0.0.1:3000 --headless -u 8 -t 1m

A scenario file stays short: it picks a user base class of :mod:`harness.locust`, a protocol and a name.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

SCENARIO_DIR = Path(__file__).resolve().parent


def scenario_names() -> list[str]:
    """The names of the packaged scenarios (file stems), sorted."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.py") if not p.name.startswith("_"))


def scenario_path(name: str) -> Path:
    """The locustfile of scenario ``name`` (with or without ``.py``); ValueError naming the choices."""
    stem = name.removesuffix(".py")
    p = SCENARIO_DIR / f"{stem}.py"
    if stem.startswith("_") or not p.exists():
        raise ValueError(f"unknown scenario {name!r}; expected one of {', '.join(scenario_names())}")
    return p


def summary_line(path: Path) -> str:
    """The first line of a scenario file's docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.splitlines()[0] if doc else ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", metavar="NAME", default=None,
                   help="print only the locustfile path of scenario NAME (for `locust -f \"$(...)\"`)")


def run(args: argparse.Namespace) -> int:
    from harness.usage import CliError

    if args.path:
        try:
            print(scenario_path(args.path))
        except ValueError as exc:
            raise CliError(str(exc)) from None
        return 0
    for name in scenario_names():
        path = scenario_path(name)
        print(f"{name:<16} {path}\n{'':<16} {summary_line(path)}")
    return 0
