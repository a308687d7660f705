"""The layer picture of the `harness` package, and the check that reads the import graph against it.

A unit is a file or folder under ``harness/``; each unit belongs to one layer, and a layer may import
only the layers listed for it (and itself). Every ``import harness...`` / ``from harness... import``
counts, at module level or inside a function: a lazy import is still an edge of the house.
"""

from __future__ import annotations

import ast
from pathlib import Path

#: layer -> the layers it may import (besides itself). Bottom first.
ALLOWED: dict[str, frozenset[str]] = {
    # the record, the metric dictionary and SLO, run-dir files, the user-error type, the server-process helper
    "core": frozenset(),
    "workload": frozenset({"core"}),
    "server": frozenset({"core", "client.tracecontext"}),  # the reference server: never the client side
    "client.tracecontext": frozenset(),  # W3C trace ids, a pure function both sides of the wire share
    "client": frozenset({"core", "workload", "client.tracecontext"}),
    "analysis": frozenset({"core"}),
    "locust": frozenset({"core", "workload", "client", "client.tracecontext", "analysis"}),
    "scenarios": frozenset({"core", "locust"}),
    "probe": frozenset({"core", "workload", "client", "client.tracecontext", "analysis"}),
    "gate": frozenset({"core", "analysis"}),
    "sweep": frozenset({"core", "analysis", "scenarios"}),
    "calibration": frozenset({"core", "workload", "client", "client.tracecontext", "analysis", "locust"}),
    "demo": frozenset({"core", "sweep", "scenarios", "analysis"}),
    "comply": frozenset({"core", "analysis", "scenarios", "sweep"}),  # MLPerf-style check on the sweep's runner
    "compare": frozenset({"core", "analysis", "gate"}),  # across runs: the gate's bootstrap
    "cli": frozenset({"core"}),  # dispatches to the commands by module name (importlib), not by import
}

#: harness/<first part> -> layer; files not listed by name are their folder's layer
UNITS: dict[str, str] = {
    "__init__.py": "core", "records.py": "core", "metrics.py": "core", "usage.py": "core",
    "server_process.py": "core", "workload": "workload", "server": "server", "client": "client",
    "client/tracecontext.py": "client.tracecontext", "analysis": "analysis", "locust": "locust",
    "scenarios": "scenarios", "probe": "probe", "gate": "gate", "sweep": "sweep", "calibration": "calibration",
    "demo.py": "demo", "comply": "comply", "compare": "compare", "cli.py": "cli", "__main__.py": "cli",
}

#: (file, imported module): edges allowed on purpose, with the reason
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("__init__.py", "harness.analysis.dataframe"): "the lazy `harness.load_run` facade (imported on first use)",
}


def layer_of_path(rel: str) -> str | None:
    """``"client/tgi.py"`` -> ``"client"``; None for a file outside the picture."""
    if rel in UNITS:
        return UNITS[rel]
    return UNITS.get(rel.split("/", 1)[0])


def layer_of_module(module: str, root: Path) -> str | None:
    """``"harness.client.tgi"`` -> ``"client"`` (resolved against the files under ``root``/harness)."""
    parts = module.split(".")[1:]
    if not parts:
        return "core"
    for n in range(len(parts), 0, -1):
        rel = "/".join(parts[:n])
        for cand in (f"{rel}.py", rel):
            if (root / "harness" / cand).exists():
                found = layer_of_path(cand) if cand in UNITS else layer_of_path(
                    cand if cand.endswith(".py") else cand + "/")
                if found is not None:
                    return found
    return layer_of_path(parts[0] + ".py") or layer_of_path(parts[0])


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every harness import in ``path``; ``from harness import x`` -> ``harness.x``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "harness"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "harness":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                rel = sub.split(".", 1)[1].replace(".", "/")
                is_mod = (root / "harness" / f"{rel}.py").exists() or (root / "harness" / rel).is_dir()
                out.append((node.lineno, sub if is_mod else node.module))
    return out


def violations(root: Path) -> list[str]:
    """Every upward or sideways import under ``root``/harness, as ``file:line: layer -> layer (module)``."""
    bad = []
    pkg = root / "harness"
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg).as_posix()
        src = layer_of_path(rel)
        if src is None:
            bad.append(f"harness/{rel}: in no layer (add it to tests/house/import_layers.py)")
            continue
        for line, module in imports_of(path, root):
            dst = layer_of_module(module, root)
            if dst is None or dst == src or dst in ALLOWED[src] or (rel, module) in EXCEPTIONS:
                continue
            bad.append(f"harness/{rel}:{line}: {src} -> {dst} ({module})")
    return bad
