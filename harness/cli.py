"""`harness COMMAND ...`: the stream-harness command line (the dispatcher of its subcommands).

Each subcommand lives in one module (a package's ``command`` module when the command has more than one
concern), which exposes ``add_arguments(parser)`` and ``run(args) -> int``; :data:`COMMANDS` is the one
table of them, and this file only dispatches. A user error is :class:`harness.usage.CliError`: one line
on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from harness.usage import CliError

__all__ = ["COMMANDS", "CliError", "build_parser", "main"]

#: subcommand -> (module, one-line help); "[server]" commands need the server extra
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("harness.server.cli", "run the reference streaming server (TGI protocol + OpenAI routes) [server]"),
    "run": ("harness.client.cli", "stream one request and print its TTFT, ITL and tokens"),
    "probe": ("harness.probe", "10-second check of an endpoint: protocols, model, usage, timing, next commands"),
    "report": ("harness.analysis.report_cli", "build summary.json, plots and report.html from a run dir"),
    "export": ("harness.analysis.dataframe", "write a run's requests as CSV or parquet (one row per request)"),
    "gate": ("harness.gate.command", "judge a run against rules and a baseline; exit 0/1, JUnit XML"),
    "sweep": ("harness.sweep.command", "capacity sweep: server caps x offered load, with sweep.html"),
    "calibrate": ("harness.calibration.command",
                  "measure the harness's own timing error against the simulated server [server]"),
    "demo": ("harness.demo", "stream one answer from the bundled server, then a short capacity sweep [server]"),
    "scenarios": ("harness.scenarios", "list the packaged Locust scenarios and their paths (for locust -f)"),
    "comply": ("harness.comply", "MLPerf-style server check: TTFT/TPOT p99 limits, early stopping, highest VALID rate"),
    "compare": ("harness.compare", "compare runs (bootstrap deltas, better/worse) or sweeps (Pareto fronts), HTML"),
}


#: environment variable naming extension modules to import before a command runs (comma separated)
PLUGINS_ENV = "HARNESS_PLUGINS"
#: entry-point group of installed extension packages (docs/extending.md)
PLUGINS_GROUP = "stream_harness.plugins"


def load_plugins() -> list[str]:
    """Import the extension modules of ``$HARNESS_PLUGINS`` and of the ``stream_harness.plugins`` entry
    points, so the protocols, arrivals, metrics, plots and gate checks they register exist for this
    command; CliError naming a module that does not import."""
    from importlib.metadata import entry_points

    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    names += [ep.value.split(":")[0] for ep in entry_points(group=PLUGINS_GROUP)]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise CliError(f"${PLUGINS_ENV}: cannot import extension module {name!r}: {exc}") from None
    return names


#: what `harness --help` says about the tool (the module docstring is for developers)
DESCRIPTION = """\
stream-harness: load tests for token-streaming LLM servers (TGI and OpenAI-compatible APIs). It measures
what a chat user feels (time to first token, inter-token latency, tokens/s, overloads) per request, runs
Locust scenarios, reports, gates CI on the results and finds the load a deployment sustains."""

EPILOG = """\
first steps:
  harness serve --model simulated                  a reference server on http://127.0.0.1:3000
  harness run --protocol openai --prompt "Hi"      stream one answer, then its TTFT, ITL and tokens
  harness scenarios                                 the Locust scenarios (locust -f PATH ...)
  harness report RUN_DIR                            report.html of a Locust run
  harness COMMAND --help                            the options of one command, with their defaults"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions' line breaks and appends ``(default: X)`` to an option's help when it has a
    default worth showing (not None/False) and its help does not already state one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (action.option_strings and default is not None and default is not False and default != ""
                and default != argparse.SUPPRESS and "default" not in text.lower() and not isinstance(action, argparse._VersionAction)):
            text += " (default: %(default)s)"
        return text


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(prog="harness", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from harness import __version__

    parser.add_argument("--version", action="version", version=f"stream-harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, object] = {}
    wanted = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    for name, (modname, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        # Import only the module of the command being run (torch imports are slow).
        if wanted == name:
            mod = importlib.import_module(modname)
            mod.add_arguments(p)
            modules[name] = mod
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    try:
        load_plugins()
    except CliError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    parser, modules = build_parser()
    args = parser.parse_args()
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].run(args) or 0)  # type: ignore[attr-defined]
    except CliError as exc:
        print(f"harness {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
