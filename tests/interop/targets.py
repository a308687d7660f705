"""One cached virtual environment per live interop target, rebuilt only when its pin list changes.

Each target's venv lives in ``${XDG_CACHE_HOME:-~/.cache}/stream-harness/interop/<name>-<hash>``,
where ``<hash>`` is the first 10 hex digits of the SHA-256 of the target's install steps and the
interpreter's version. A finished install writes the stamp file ``.ready`` (holding the steps);
a venv without it is removed and built anew. Only the target's own packages go into it: the harness
and the tests run from the project's venv and start the target's server with the target venv's
python as a subprocess.

    python tests/interop/targets.py ensure [NAME ...]   # build missing venvs (all targets by default)
    python tests/interop/targets.py path NAME           # print a target venv's directory

pip's own output goes to ``<venv>/install.log``; on a failure its last lines are printed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STAMP = ".ready"


@dataclass(frozen=True)
class Target:
    """A live target: its install steps (each one ``pip install`` call, in order) and what it serves."""

    name: str
    steps: tuple[tuple[str, ...], ...]
    about: str
    build_note: str = ""  #: shown when the venv is built

    @property
    def key(self) -> str:
        """Short hash of the steps and the interpreter version: a changed pin means a new venv."""
        text = repr((self.steps, sys.version_info[:2]))
        return hashlib.sha256(text.encode()).hexdigest()[:10]


#: torch is installed first and pinned, so the serving extras never pull a CUDA build.
TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("llamacpp", (("llama-cpp-python[server]==0.3.36",),),
               "llama.cpp's server through llama-cpp-python (python -m llama_cpp.server)",
               "llama-cpp-python compiles from source unless pip has its wheel cached: ~10 min on 2 cores"),
        Target("tserve", (("torch==2.13.0",), ("transformers[serving]==5.23.0", "torch==2.13.0")),
               "transformers serve --continuous-batching"),
    )
}


def cache_root(kind: str = "interop") -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/stream-harness/<kind>`` (``interop``; benchmarks/peers.py: ``peers``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stream-harness" / kind


def venv_dir(name: str) -> Path:
    """The venv directory of target ``name`` (whether built or not)."""
    t = TARGETS[name]
    return cache_root() / f"{t.name}-{t.key}"


def python(name: str) -> Path:
    """The python of target ``name``'s venv; FileNotFoundError when it is not built."""
    d = venv_dir(name)
    if not (d / STAMP).is_file():
        raise FileNotFoundError(f"interop venv for {name!r} is not built ({d}); run `make interop`")
    return d / "bin" / "python"


def is_ready(name: str) -> bool:
    return (venv_dir(name) / STAMP).is_file()


def build_venv(t: Target, d: Path, label: str, out=sys.stdout, timeout_s: float | None = None) -> Path:
    """Build ``t``'s venv in ``d`` unless its stamp is there (then return at once); returns ``d``.

    One ``pip install`` per step, pip's output in ``<d>/install.log``; with ``timeout_s`` every step is
    bounded by what is left of it. Raises RuntimeError (the step and the tail of the log) when a step
    fails or runs out of time. Venvs of older pins beside ``d`` (``<name>-*``) are removed once it is built.
    """
    if (d / STAMP).is_file():
        return d
    if d.exists():
        shutil.rmtree(d)
    d.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    note = f" ({t.build_note})" if t.build_note else ""
    print(f"{label}: building venv {d}{note}", file=out, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(d)], check=True)
    log = d / "install.log"
    for step in t.steps:
        left = None if timeout_s is None else max(1.0, timeout_s - (time.monotonic() - t0))
        print(f"{label}: pip install {' '.join(step)}", file=out, flush=True)
        with open(log, "ab") as fh:
            try:
                rc = subprocess.run([str(d / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off",
                                     *step], stdout=fh, stderr=subprocess.STDOUT, timeout=left).returncode
            except subprocess.TimeoutExpired:
                rc = None
        if rc != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            why = f"timed out after {timeout_s:.0f} s" if rc is None else f"exit {rc}"
            raise RuntimeError(f"{label}: pip install {' '.join(step)} failed ({why}); log {log}:\n{tail}")
    (d / STAMP).write_text("\n".join(" ".join(s) for s in t.steps) + "\n")
    for old in d.parent.glob(f"{t.name}-*"):  # venvs of older pins
        if old != d and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    print(f"{label}: venv built in {time.monotonic() - t0:.0f} s", file=out, flush=True)
    return d


def ensure(name: str, out=sys.stdout) -> Path:
    """Build target ``name``'s venv unless its stamp is there; returns the venv directory.

    Raises RuntimeError (with the tail of pip's log) when an install step fails.
    """
    d = venv_dir(name)
    if is_ready(name):
        print(f"interop: {name}: venv ready ({d})", file=out, flush=True)
        return d
    return build_venv(TARGETS[name], d, f"interop: {name}", out)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("ensure", "path"):
        print("usage: targets.py ensure [NAME ...] | targets.py path NAME", file=sys.stderr)
        return 2
    names = argv[1:] or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        print(f"unknown interop target {unknown[0]!r}; expected one of {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    if argv[0] == "path":
        if len(names) != 1:
            print("targets.py path takes exactly one NAME", file=sys.stderr)
            return 2
        print(venv_dir(names[0]))
        return 0
    for n in names:
        try:
            ensure(n)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            print(str(exc), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
