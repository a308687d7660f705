"""Both installs of a built wheel, used from a directory outside the checkout.

- light (``pip install <wheel>`` into a fresh venv, dependencies from the package index or pip's cache):
  no torch, no transformers; ``harness run``, ``locust -f <packaged scenario>``, ``harness report``,
  ``harness export``, ``harness gate`` and ``harness sweep --host`` work against a real server and write
  only under the directory they were given;
- ``[server]`` (the wheel in a second fresh venv; the heavy dependencies, torch included, are reused from
  this checkout's environment through a path file instead of being installed again): ``harness calibrate``
  and ``harness sweep`` of the bundled server run from there and write only under their ``--out``.

The wheel is built from a copy of the sources, so the checkout is not written either.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from harness.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(900)


def sh(cmd: list[str], cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})})
    assert p.returncode == 0, f"{' '.join(cmd)} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def files_under(d: Path) -> set[Path]:
    return {p for p in d.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "harness", src / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src), "-w", str(out)],
       src)
    (whl,) = out.glob("stream_harness-*.whl")
    return whl


def venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=180)
    return where / "bin"


def test_wheel_metadata_keeps_the_server_optional(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        names = z.namelist()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    base = [r for r in requires if "extra ==" not in r]
    assert base and not any(r.split()[0].lower().startswith(("torch", "transformers", "fastapi")) for r in base)
    assert any(r.startswith("torch") and 'extra == "server"' in r for r in requires), requires
    assert "harness/scenarios/chat_stream.py" in names and "harness/workload/data/prompts.jsonl" in names


def test_light_install_has_no_torch_and_works_from_anywhere(wheel: Path, tmp_path: Path) -> None:
    bin_ = venv(tmp_path / "light")
    sh([str(bin_ / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)], tmp_path, timeout=600)
    listed = sh([str(bin_ / "pip"), "list", "--format=freeze"], tmp_path).stdout.lower()
    assert "stream-harness" in listed
    for heavy in ("torch", "transformers", "fastapi", "uvicorn", "accelerate"):
        assert f"\n{heavy}==" not in "\n" + listed, heavy
    py = str(bin_ / "python")
    where = sh([py, "-c", "import harness; print(harness.__file__)"], tmp_path).stdout.strip()
    assert where.startswith(str(tmp_path / "light")), where  # the installed package, not the checkout
    pkg = Path(where).parent
    pkg_files = files_under(pkg)

    work = tmp_path / "work"
    work.mkdir()
    h = str(bin_ / "harness")
    with ServerProcess.serve(["--model", "simulated", "--sim-ttft-ms", "5", "--sim-itl-ms", "2",
                              "--sim-output-tokens", "8"], tmp_path / "server") as srv:
        out = sh([h, "run", "--host", srv.url, "--prompt", "hello", "--max-new-tokens", "8"], work)
        assert "TTFT" in out.stdout or "ttft" in out.stdout.lower(), out.stdout
        scenario = sh([h, "scenarios", "--path", "chat_stream"], work).stdout.strip()
        assert scenario.startswith(str(pkg)), scenario
        sh([str(bin_ / "locust"), "-f", scenario, "--host", srv.url, "--headless", "-u", "2", "-r", "2", "-t", "4s",
            "--run-dir", "run1", "--only-summary", "--input-tokens", "fixed:8", "--output-tokens", "fixed:8"],
           work, timeout=120)
        sh([h, "sweep", "--host", srv.url, "--users", "1", "--duration", "2", "--warmup", "0", "--out", "sweep",
            "--no-point-reports", "--input-tokens", "fixed:8", "--output-tokens", "fixed:8"], work, timeout=180)
    sh([h, "report", "run1"], work)
    (work / "gate.toml").write_text('rules = ["requests >= 1", "ok >= 1"]\n')
    gate = sh([h, "gate", "run1", "--rules", "gate.toml"], work)
    assert "0 failed" in gate.stdout, gate.stdout
    sh([h, "export", "run1", "--format", "csv"], work)
    written = {p.relative_to(work).as_posix() for p in files_under(work)}
    assert {"run1/records.jsonl", "run1/report.html", "run1/requests.csv", "sweep/sweep.json"} <= written, written
    assert files_under(pkg) == pkg_files  # nothing written into the installed package
    assert {p.name for p in tmp_path.iterdir()} == {"light", "work", "server"}


def test_server_install_calibrates_and_sweeps_from_anywhere(wheel: Path, tmp_path: Path) -> None:
    bin_ = venv(tmp_path / "srv")
    sh([str(bin_ / "pip"), "install", "-q", "--no-deps", "--disable-pip-version-check", str(wheel)], tmp_path)
    # the [server] dependencies (torch, transformers, fastapi, ...) from this environment, read-only
    target = sh([str(bin_ / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                tmp_path).stdout.strip()
    (Path(target) / "reuse-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n"
                                                  + "\n".join(site.getsitepackages()) + "\n")
    where = sh([str(bin_ / "python"), "-c", "import harness, torch, fastapi; print(harness.__file__)"],
               tmp_path).stdout.strip()
    assert where.startswith(str(tmp_path / "srv")), where
    work = tmp_path / "work"
    work.mkdir()
    h = str(bin_ / "harness")
    env = {"HARNESS_CALIBRATION": str(work / "installed" / "calibration.json")}
    sh([h, "calibrate", "--levels", "4", "--duration-per-level", "4", "--warmup", "1", "--out", "cal"], work,
       timeout=240, env=env)
    sh([h, "sweep", "--caps", "2", "--users", "1", "--duration", "2", "--warmup", "0", "--model", "simulated",
        "--out", "sweep", "--no-point-reports", "--input-tokens", "fixed:8", "--output-tokens", "fixed:8",
        "--server-timeout", "120"], work, timeout=240)
    written = {p.relative_to(work).as_posix() for p in files_under(work)}
    assert {"cal/calibration.json", "installed/calibration.json", "sweep/sweep.json", "sweep/sweep.html"} <= written
    assert any(w.startswith("sweep/cap-2/users-1/") and w.endswith("records.jsonl") for w in written), written
    assert {p.name for p in tmp_path.iterdir()} == {"srv", "work"}
