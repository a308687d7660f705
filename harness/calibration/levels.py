"""Load levels of a calibration and the run of one level: simulated server + one Locust process.

A level is ``streams`` concurrent closed-loop streams offering ``tokens_per_s`` token events per
second in total. The simulated server's script makes that rate: every request asks for
:data:`OUTPUT_TOKENS` tokens, the first after :data:`TTFT_MS`, then one every ``itl_ms`` where

    tokens_per_s = streams * OUTPUT_TOKENS / (TTFT_MS + (OUTPUT_TOKENS - 1) * itl_ms) * 1000
    =>  itl_ms = (streams * OUTPUT_TOKENS * 1000 / tokens_per_s - TTFT_MS) / (OUTPUT_TOKENS - 1)

(the client's own per-request overhead lowers the achieved rate a little; the achieved rate is
measured and reported). Each gap gets a seeded uniform jitter of +-:data:`JITTER_SHARE` x itl so
streams do not march in lock-step. Users are spawned over ``ramp_s`` seconds, which spreads their
phases.

Each level gets a fresh server (its own ``--trace-file``) and a fresh ``locust --headless``
process running :mod:`harness.calibration.locustfile`; the first ``warmup_s`` seconds of the level
are left out of the join.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.calibration.join import join, read_trace
from harness.calibration.result import cpu_pressure
from harness.records import iter_records
from harness.server_process import ServerProcess

TTFT_MS = 20.0
OUTPUT_TOKENS = 64
INPUT_TOKENS = 8
JITTER_SHARE = 0.2
#: default offered rate per stream: 10k tokens/s at 256 streams (DESIGN.md's accuracy point)
TOKENS_PER_STREAM_S = 10_000 / 256
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
_LEVEL = re.compile(r"^\s*(\d+)\s*(?:@\s*([0-9.]+)\s*(k?)\s*)?$", re.IGNORECASE)


@dataclass(frozen=True)
class Level:
    """``streams`` concurrent streams offering ``tokens_per_s`` token events/s in total."""

    streams: int
    tokens_per_s: float

    @property
    def itl_ms(self) -> float:
        """The scripted inter-token gap giving :attr:`tokens_per_s` (module docstring formula)."""
        cycle_ms = self.streams * OUTPUT_TOKENS * 1000.0 / self.tokens_per_s
        return (cycle_ms - TTFT_MS) / (OUTPUT_TOKENS - 1)

    @property
    def label(self) -> str:
        return f"{self.streams}@{self.tokens_per_s:g}"


def parse_levels(text: str) -> list[Level]:
    """``"16,64,256@10000,512@20k"`` -> levels (streams[@tokens/s]; default rate
    :data:`TOKENS_PER_STREAM_S` per stream). ValueError with the bad item on bad input."""
    out: list[Level] = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        m = _LEVEL.match(item)
        if not m:
            raise ValueError(f"--levels: bad level {item.strip()!r} (expected STREAMS or STREAMS@TOKENS_PER_S)")
        streams = int(m.group(1))
        rate = float(m.group(2)) * (1000 if m.group(3) else 1) if m.group(2) else streams * TOKENS_PER_STREAM_S
        if streams < 1 or rate <= 0:
            raise ValueError(f"--levels: {item.strip()!r}: streams and tokens/s must be positive")
        level = Level(streams, rate)
        if level.itl_ms <= 0:
            raise ValueError(f"--levels: {item.strip()!r}: {rate:g} tokens/s is more than {streams} streams can "
                             f"carry with a {TTFT_MS:g} ms first token")
        out.append(level)
    if not out:
        raise ValueError("--levels: no level given")
    return out


def server_args(level: Level, trace: Path, seed: int = 0) -> list[str]:
    """``harness serve`` arguments scripting ``level`` (TTFT, ITL, jitter, no natural end)."""
    itl = level.itl_ms
    return ["--model", "simulated", "--sim-ttft-ms", f"{TTFT_MS:g}", "--sim-itl-ms", f"{itl:.4f}",
            "--sim-jitter-ms", f"{itl * JITTER_SHARE:.4f}", "--sim-output-tokens", "0", "--sim-seed", str(seed),
            "--max-concurrent-requests", str(max(128, 2 * level.streams)), "--trace-file", str(trace),
            "--graceful-termination-timeout", "5", "--log-level", "warning"]


def locust_command(level: Level, host: str, run_dir: Path, duration_s: float, ramp_s: float,
                   locustfile: Path = LOCUSTFILE) -> list[str]:
    """The headless Locust run of one level (one process, closed loop, ``level.streams`` users)."""
    rate = max(1.0, level.streams / max(ramp_s, 0.001))
    return [sys.executable, "-m", "locust", "-f", str(locustfile), "--host", host, "--headless",
            "-u", str(level.streams), "-r", f"{rate:g}", "-t", f"{max(1, round(duration_s))}s",
            "--stop-timeout", "0", "--run-dir", str(run_dir), "--only-summary", "--loglevel", "WARNING",
            "--input-tokens", f"fixed:{INPUT_TOKENS}", "--output-tokens", f"fixed:{OUTPUT_TOKENS}"]


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None when it is gone)."""
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except (psutil.Error, OSError):
        return None


def _renice(pid: int, nice: int) -> None:
    """Niceness of ``pid`` and of its scheduler autogroup: with autogroups (common on VMs) CPU is
    shared per session first, so a process's nice alone does not weigh against other sessions;
    the server and Locust therefore run in sessions of their own (``setsid``). Best effort."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError:
        pass
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    except OSError:
        pass


def _pin(pid: int, cpu: int) -> None:
    try:
        os.sched_setaffinity(pid, {cpu})
    except (AttributeError, OSError):
        pass


def run_level(level: Level, out_dir: Path, duration_s: float, warmup_s: float, ramp_s: float = 1.0,
              seed: int = 0, nice: int | None = None, pin: bool = False, locustfile: Path = LOCUSTFILE,
              locust_args: tuple[str, ...] = (), env: dict[str, str] | None = None,
              records_file: Path | None = None) -> dict:
    """Run one level and return its figures (see :func:`level_figures`); files go to ``out_dir``.

    ``nice``: server and Locust run in sessions of their own with this niceness for the process
    and its autogroup (negative values need privileges; they shield the measurement from other
    load on a shared machine). ``pin``: server on CPU 0, Locust on CPU 1 (with >= 2 CPUs).
    ``locustfile``/``locust_args``
    (e.g. a user class name), ``env`` (added to the environment) and ``records_file`` (JSONL of
    records with at least ``request_id``, ``send_ns``, ``token_ns``; default the run dir's
    records.jsonl) let benchmarks run other clients on the same script. Raises RuntimeError when
    the server does not start or Locust writes no records.
    """
    out_dir = Path(out_dir).resolve()  # every process runs in out_dir: paths must not depend on the caller's cwd
    prefix = ["setsid"] if nice is not None and shutil.which("setsid") else []
    pin = pin and (os.cpu_count() or 1) >= 2
    out_dir.mkdir(parents=True, exist_ok=True)
    trace = out_dir / "trace.jsonl"
    trace.unlink(missing_ok=True)
    run_dir = out_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # the record sink appends: start empty
    records_file = records_file or run_dir / "records.jsonl"
    records_file.unlink(missing_ok=True)
    server = ServerProcess.serve(server_args(level, trace, seed), out_dir, 60.0, prefix=prefix,
                                 log_name="server.log")
    assert server.proc is not None
    if nice is not None:
        _renice(server.proc.pid, nice)
    if pin:
        _pin(server.proc.pid, 0)
    cpu: dict[str, float] = {}
    proc: subprocess.Popen | None = None
    try:
        cmd = [*prefix, *locust_command(level, server.url, run_dir, duration_s, ramp_s, locustfile), *locust_args]
        with open(out_dir / "locust.log", "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=out_dir,
                                    env={**os.environ, **(env or {})})
            if nice is not None:
                _renice(proc.pid, nice)
            if pin:
                _pin(proc.pid, 1)
            # Client and server CPU over the measured part of the run (after warm-up, before the stop).
            t0 = time.monotonic()
            measured_s = max(0.5, duration_s - warmup_s - 0.5)
            time.sleep(min(warmup_s + 1.0, duration_s))  # locust's own start-up (~1 s) comes first
            c0, s0, m0 = _cpu_s(proc.pid), _cpu_s(server.proc.pid), time.monotonic_ns()
            time.sleep(max(0.0, min(measured_s, t0 + duration_s + 0.5 - time.monotonic())))
            c1, s1, m1 = _cpu_s(proc.pid), _cpu_s(server.proc.pid), time.monotonic_ns()
            if None not in (c0, c1, s0, s1) and m1 > m0:
                cpu = {"client_cpu_s": c1 - c0, "server_cpu_s": s1 - s0, "cpu_from_ns": m0, "cpu_to_ns": m1,
                       "loadavg_1m": round(os.getloadavg()[0], 2), "cpu_pressure_some_avg10": cpu_pressure()}
            try:
                rc = proc.wait(timeout=duration_s + 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
    finally:
        if proc is not None and proc.poll() is None:  # interrupted: leave no Locust behind
            proc.kill()
            proc.wait()
        server.stop()  # SIGTERM: the trace's last lines are written at shutdown
    if not records_file.exists() or records_file.stat().st_size == 0:
        raise RuntimeError(f"level {level.label}: locust exited with {rc} and wrote no records; "
                           f"see {out_dir / 'locust.log'}")
    return level_figures(level, records_file, trace, warmup_s, rc, cpu)


def level_figures(level: Level, records_file: Path, trace_path: Path, warmup_s: float,
                  locust_rc: int | None = None, cpu: dict | None = None) -> dict:
    """Join a level's records with its trace; the level's figures as a JSON-ready dict.

    ``achieved_tokens_per_s`` = joined token events / (last server write - window start), where the
    window starts ``warmup_s`` after the first send. With ``cpu`` (CPU seconds of client and server
    between ``cpu_from_ns`` and ``cpu_to_ns``): ``client_cpu_percent`` = 100 x client CPU s / window
    s (likewise the server), and ``client_us_per_event`` = client CPU s / token events the server
    wrote in that window x 1e6 (the steady state: the window starts after the warm-up and the ramp and
    ends before Locust's stop; CPU is user + system time from /proc). ``loadavg_1m`` and
    ``cpu_pressure_some_avg10`` (PSI, %) are the machine's at the window's end.
    """
    records = list(iter_records(records_file))
    sends = [r.send_ns for r in records if r.send_ns is not None]
    if not sends:
        raise RuntimeError(f"level {level.label}: no request was sent (see {records_file})")
    t_from = min(sends) + int(warmup_s * 1e9)
    trace = read_trace(trace_path)
    result = join(records, trace, t_from_ns=t_from)
    last = max((t for per in trace.values() for t in per.values()), default=t_from)
    window_s = max(1e-9, (last - t_from) / 1e9)
    achieved = result.joined / window_s if last > t_from else 0.0
    meta = _run_json(records_file.parent)
    out = {"level": level.label, "streams": level.streams, "offered_tokens_per_s": round(level.tokens_per_s, 1),
           "itl_ms": round(level.itl_ms, 4), "achieved_tokens_per_s": round(achieved, 1),
           "window_s": round(window_s, 3), **result.summary(),
           "client_bound": meta.get("client_bound"), "client_bound_reasons": meta.get("client_bound_reasons") or [],
           "locust_exit_code": locust_rc, "run_dir": str(records_file.parent)}
    if cpu:
        lo, hi = cpu["cpu_from_ns"], cpu["cpu_to_ns"]
        secs = (hi - lo) / 1e9
        events = sum(1 for per in trace.values() for t in per.values() if lo <= t <= hi)
        out.update(client_cpu_percent=round(100 * cpu["client_cpu_s"] / secs, 2),
                   server_cpu_percent=round(100 * cpu["server_cpu_s"] / secs, 2), cpu_window_s=round(secs, 3),
                   cpu_window_events=events, loadavg_1m=cpu.get("loadavg_1m"),
                   cpu_pressure_some_avg10=cpu.get("cpu_pressure_some_avg10"))
        if events:
            out["client_us_per_event"] = round(cpu["client_cpu_s"] / events * 1e6, 2)
            out["server_us_per_event"] = round(cpu["server_cpu_s"] / events * 1e6, 2)
    return out


def _run_json(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}
