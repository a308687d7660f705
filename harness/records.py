"""The run dir's files: the one per-request timing record, its JSONL sink and reader, run.json, and
the reader of the scraped server metrics beside them.

Every figure the harness reports derives from :class:`RequestRecord`. All ``*_ns`` fields are
readings of one monotonic clock (``time.monotonic_ns``; CLOCK_MONOTONIC on Linux, comparable
across processes on one host). A run additionally stores one wall-clock anchor
(``wall_anchor_ns``/``mono_anchor_ns`` in ``run.json``) so times can be shown as dates.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

RECORDS_FILE = "records.jsonl"


class Outcome(StrEnum):
    """Outcome class of one attempted request."""

    OK = "ok"  #: the stream ended with its final event / [DONE]
    OVERLOADED = "overloaded"  #: HTTP 429 or an SSE error event with error_type "overloaded"
    VALIDATION = "validation"  #: 422 / error_type "validation"
    GENERATION = "generation"  #: 424 / error_type "generation"
    INCOMPLETE = "incomplete"  #: the stream ended without its final event
    HTTP_ERROR = "http_error"  #: any other non-2xx status
    CONNECT_ERROR = "connect_error"  #: no connection could be made
    TIMEOUT = "timeout"  #: connect, per-token read or total timeout
    CANCELLED = "cancelled"  #: stopped by the harness (end of run)
    DROPPED = "dropped"  #: open loop: the client was saturated and never sent it


@dataclass(slots=True)
class RequestRecord:
    """One attempted request. Times are monotonic-clock nanoseconds; ``None`` means "did not happen"."""

    run_id: str = ""
    scenario: str = ""
    worker: str = ""
    user: str = ""
    request_id: str = ""
    protocol: str = ""  #: "tgi" | "openai"
    target: str = ""  #: base URL + route
    intended_ns: int | None = None  #: open loop: scheduled start; closed loop: equals send_ns
    send_ns: int | None = None  #: the request was handed to the socket (first attempt)
    attempt_send_ns: int | None = None  #: send time of the final attempt (== send_ns without retries)
    headers_ns: int | None = None  #: response status line and headers parsed (final attempt)
    token_ns: list[int] = field(default_factory=list)  #: arrival of each token-bearing event
    tokens_per_event: list[int] = field(default_factory=list)  #: tokens carried by each event
    reasoning_events: int = 0  #: OpenAI: how many token events were reasoning deltas
    reasoning_tokens: int = 0  #: OpenAI: tokens carried by reasoning deltas (client count, as tokens_per_event)
    tool_call_tokens: int = 0  #: OpenAI: tokens carried by tool-call deltas (client count)
    first_reasoning_ns: int | None = None  #: OpenAI: arrival of the first reasoning token event
    first_answer_ns: int | None = None  #: OpenAI: arrival of the first answer event (content / completions text)
    first_tool_call_ns: int | None = None  #: OpenAI: arrival of the first event with a ``delta.tool_calls`` entry
    #: OpenAI: arrival of the event whose finish_reason is ``tool_calls``; a stream that ended its tool
    #: calls without that reason: the arrival of its last ``delta.tool_calls`` event
    tool_call_end_ns: int | None = None
    end_ns: int | None = None  #: the response ended (final event, error or failure)
    http_status: int | None = None
    outcome: str = Outcome.OK.value
    error_text: str | None = None
    finish_reason: str | None = None
    done_missing: bool = False  #: OpenAI: ok stream that ended after its finish_reason without [DONE]
    input_tokens_server: int | None = None
    cached_input_tokens: int | None = None  #: OpenAI usage ``prompt_tokens_details.cached_tokens`` (server)
    input_tokens_client: int | None = None
    output_tokens_server: int | None = None  #: as reported by the server (details / usage)
    output_tokens_events: int = 0  #: sum of tokens_per_event
    output_tokens_retokenized: int | None = None  #: client re-tokenized the text, when asked
    retries: int = 0
    retry_after_s: float | None = None
    turn: int | None = None  #: sessions: 1-based turn of this request in its conversation
    text: str | None = None  #: generated text, only when the run keeps it

    def to_json(self) -> str:
        """One JSONL line (no trailing newline).

        Fields are read directly (every field is a JSON scalar or a list of ints): the same text as
        ``json.dumps(asdict(self))`` at about a tenth of its cost (asdict deep-copies every list),
        which matters at one record per request in the client's process.
        """
        return json.dumps({name: getattr(self, name) for name in RECORD_COLUMNS}, separators=(",", ":"),
                          ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestRecord:
        """Build a record from a dict, ignoring unknown keys (forward compatible)."""
        names = _FIELD_NAMES
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.OK


_FIELD_NAMES = frozenset(f.name for f in fields(RequestRecord))
RECORD_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))


class RecordSink:
    """Appends records to ``RUN_DIR/records.jsonl``; flushed at least every ``flush_interval_s``.

    Thread-safe and gevent-friendly: ``write`` only buffers a line; a flush happens when the
    interval has passed at the next write, or from :meth:`flush` (Locust integration calls it
    from a 1 s timer greenlet so an idle run is flushed too). A process killed with SIGKILL thus
    loses at most ``flush_interval_s`` of records.
    """

    def __init__(self, run_dir: str | os.PathLike[str], flush_interval_s: float = 1.0,
                 filename: str = RECORDS_FILE) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / filename
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._buf: list[str] = []
        self._lock = threading.Lock()
        self._interval_ns = int(flush_interval_s * 1e9)
        self._last_flush = time.monotonic_ns()
        self.count = 0

    def write(self, record: RequestRecord) -> None:
        self.write_lines([record.to_json()])

    def write_lines(self, lines: list[str]) -> None:
        """Append already-serialised JSON lines (used by the master for shipped batches)."""
        with self._lock:
            self._buf.extend(lines)
            self.count += len(lines)
            if time.monotonic_ns() - self._last_flush >= self._interval_ns:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._buf and not self._fh.closed:
            self._fh.write("\n".join(self._buf) + "\n")
            self._buf.clear()
            self._fh.flush()
        self._last_flush = time.monotonic_ns()

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            self._fh.close()

    def __enter__(self) -> RecordSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file, lazily; blank, truncated or corrupt lines and non-objects are
    skipped (a process killed mid-write leaves a partial last line). The one tolerant reader of the
    run dir's JSONL files (records, scraped server metrics); nothing when the file is absent."""
    try:
        fh = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                yield obj


def records_file(path: str | os.PathLike[str]) -> Path:
    """``RUN_DIR/records.jsonl`` for a run dir, else ``path`` itself."""
    p = Path(path)
    return p / RECORDS_FILE if p.is_dir() else p


def iter_records(path: str | os.PathLike[str]) -> Iterator[RequestRecord]:
    """Records of a JSONL file or a run dir, lazily; a truncated or corrupt line is skipped."""
    for obj in read_jsonl(records_file(path)):
        try:
            yield RequestRecord.from_dict(obj)
        except TypeError:
            continue


# --------------------------------------------------------------------------- scraped server metrics

SERVER_METRICS_FILE = "server_metrics.jsonl"
#: series that mean "requests waiting" / "requests in the running batch", by server family
QUEUE_SERIES: tuple[str, ...] = ("tgi_queue_size", "vllm:num_requests_waiting")
BATCH_SERIES: tuple[str, ...] = ("tgi_batch_current_size", "vllm:num_requests_running")


def iter_server_metrics(run_dir: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Lines of ``RUN_DIR/server_metrics.jsonl`` (written by :mod:`harness.client.prometheus_scrape`);
    bad lines skipped; nothing when the file is absent."""
    return read_jsonl(Path(run_dir) / SERVER_METRICS_FILE)


def series(run_dir: str | os.PathLike[str], names: tuple[str, ...]) -> tuple[str | None, list[int], list[float]]:
    """The first of ``names`` present in the scrapes -> (name, t_ns list, values); (None, [], []) if none.

    Labelled series of that name are summed per scrape.
    """
    rows = [r for r in iter_server_metrics(run_dir) if "metrics" in r]
    for name in names:
        ts, vs = [], []
        for r in rows:
            vals = [v for k, v in r["metrics"].items() if k == name or k.startswith(name + "{")]
            if vals:
                ts.append(int(r["t_ns"]))
                vs.append(float(sum(vals)))
        if ts:
            return name, ts, vs
    return None, [], []


def write_run_meta(run_dir: str | os.PathLike[str], **meta: Any) -> Path:
    """Write ``run.json`` with the clock anchor (wall and monotonic ns taken together) and ``meta``."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    out = d / "run.json"
    data: dict[str, Any] = {}
    if out.exists():
        try:
            data = json.loads(out.read_text())
        except json.JSONDecodeError:
            data = {}
    data.setdefault("wall_anchor_ns", time.time_ns())
    data.setdefault("mono_anchor_ns", time.monotonic_ns())
    data.update(meta)
    out.write_text(json.dumps(data, indent=2, default=str))
    return out
