"""Failure causes and the failure headline: one rule for summaries, reports, Locust's console and sweeps.

:func:`failure_key` turns a failed record's outcome and error text into a short, stable grouping key
(``connect_error: connection refused``, ``http_error 400: invalid_request_error: Invalid X-Request-Id``,
``overloaded 429``, ``timeout: read timeout``): the HTTP status comes from the error text's
``HTTP NNN`` head, host:port pairs, UUIDs, long hex/alphanumeric ids and numbers are replaced
(``<host>``, ``<id>``, ``N``), whitespace is collapsed and the text is cut to :data:`TEXT_MAX`
characters, so requests failing for the same reason share one key.

:func:`failure_verdict` is *the* rule (:data:`DOMINANT_SHARE`):

- attempts = requests the server was asked to serve: every record except open-loop drops (never
  sent) and requests the harness cancelled at the end of a run (not the server's doing);
- failed share = (attempts - ok) / attempts;
- failures *dominate* when the failed share is above 0.5 (fewer than half the attempts were ok); the
  run's first line then says so, naming the most common cause and its text;
- the cause is a *capacity signal* when its class is ``overloaded`` (the server refusing load above
  its capacity, e.g. users above a server cap); any other dominant cause (connect errors, 4xx, 5xx,
  timeouts, broken streams) makes a sweep point *inconclusive*: its figures describe the failures,
  not the server's capacity.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.metrics import NOT_JUDGED
from harness.records import Outcome, RequestRecord

#: failures dominate when more than this share of attempts failed
DOMINANT_SHARE = 0.5
#: characters of error text kept in a key
TEXT_MAX = 80
#: causes listed in a summary's ``failures.top``
TOP_CAUSES = 5
#: outcomes that are neither attempts' successes nor the server's failures
NOT_ATTEMPTS = NOT_JUDGED

_HTTP_HEAD = re.compile(r"^HTTP (\d{3})\b:?\s*")
_HOST_PORT = re.compile(r"\(?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][\w.-]*):\d{1,5}\)?")
_UUID = re.compile(r"\b[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}\b")
_HEX_ID = re.compile(r"\b[0-9A-Fa-f]{16,}\b")
_LONG_ID = re.compile(r"\b(?=(?:[A-Za-z_-]*\d){8})[A-Za-z0-9_-]{20,}\b")  # a long token with 8+ digits: an id
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?!\w|\.\d)")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class FailureCause:
    """One failure key's parts: outcome class, HTTP status (None: no HTTP status) and normalised text."""

    outcome: str
    status: int | None
    text: str

    @property
    def key(self) -> str:
        """``<outcome>[ <status>][: <text>]``, the grouping key."""
        head = self.outcome + (f" {self.status}" if self.status is not None else "")
        return f"{head}: {self.text}" if self.text else head

    def describe(self) -> str:
        """``http_error 400 (server: 'bad request id')`` / ``connect_error (connection refused)``."""
        head = self.outcome + (f" {self.status}" if self.status is not None else "")
        if not self.text:
            return head
        return f"{head} (server: '{self.text}')" if self.status is not None else f"{head} ({self.text})"


def _norm_text(outcome: str, text: str) -> str:
    if outcome in (Outcome.OVERLOADED.value, Outcome.CANCELLED.value):
        return ""  # the class (and status) is the cause; the wording varies by server
    low = text.lower()
    if outcome == Outcome.TIMEOUT.value:
        for needle, short in (("read timeout", "read timeout"), ("total timeout", "total timeout"),
                              ("no response within", "read timeout (no response)"),
                              ("tls handshake", "tls handshake timeout"), ("connect", "connect timeout"),
                              ("while sending", "send timeout")):
            if needle in low:
                return short
    text = _HOST_PORT.sub("", text)
    if low.startswith(outcome + ":"):  # the error type repeats the class (validation: ...)
        text = text[len(outcome) + 1:]
    head, sep, rest = text.partition(": ")
    if sep and rest.strip() == head.strip():  # "Internal Server Error: Internal Server Error"
        text = head
    if outcome == Outcome.CONNECT_ERROR.value:
        text = re.sub(r"(?i)^\s*cannot connect to\b", "", text)
        text = text.lower()
    text = _UUID.sub("<id>", text)
    text = _HEX_ID.sub("<id>", text)
    text = _LONG_ID.sub("<id>", text)
    text = _NUMBER.sub("N", text)
    text = _SPACE.sub(" ", text).strip(" :;,-")
    text = re.sub(r"\(\s*\)", "", text).strip(" :;,-")
    return text if len(text) <= TEXT_MAX else text[:TEXT_MAX - 3].rstrip() + "..."


def failure_cause(outcome: str, error_text: str | None) -> FailureCause:
    """The :class:`FailureCause` of a failed record (see the module docstring for the normalisation)."""
    text = (error_text or "").strip()
    status = None
    m = _HTTP_HEAD.match(text)
    if m:
        status, text = int(m.group(1)), text[m.end():]
    elif text.startswith("error event"):  # an SSE error event (HTTP 200): no status
        text = text[len("error event"):]
    return FailureCause(outcome, status, _norm_text(outcome, text.strip(" :")))


def failure_key(outcome: str, error_text: str | None) -> str:
    """The stable grouping key of a failed record, e.g. ``connect_error: connection refused``."""
    return failure_cause(outcome, error_text).key


def record_key(rec: RequestRecord) -> str:
    """:func:`failure_key` of a record."""
    return failure_key(rec.outcome, rec.error_text)


def cause_counts(records: Iterable[RequestRecord]) -> Counter[str]:
    """Failed attempts per failure key (ok, dropped and cancelled records are not counted)."""
    return Counter(record_key(r) for r in records if r.outcome != Outcome.OK and r.outcome not in NOT_ATTEMPTS)


@dataclass
class FailureVerdict:
    """The rule's result (module docstring); ``headline`` is None unless failures dominate."""

    attempts: int
    ok: int
    failed: int
    failed_share: float
    dominates: bool
    capacity_signal: bool  #: the dominant cause is the server refusing load (overloaded)
    inconclusive: bool  #: failures dominate and are not overloads: the figures describe the failures
    headline: str | None
    top: list[dict] = field(default_factory=list)  #: [{key, outcome, status, text, count}], most common first

    def as_dict(self) -> dict:
        return asdict(self)


def _pct(part: int, whole: int) -> str:
    """Percent without claiming 100 % or 0 % when it is not exactly so."""
    p = 100.0 * part / whole
    s = f"{p:.0f}"
    if (s == "100" and part < whole) or (s == "0" and part > 0):
        s = f"{p:.1f}" if 0.05 <= p <= 99.95 else ("99.9" if part < whole else "0.1")
    return s + " %"


def failure_verdict(outcomes: Mapping[str, int], causes: Mapping[str, int] | None = None) -> FailureVerdict:
    """The failure rule over outcome counts and failure-key counts (module docstring).

    ``causes`` maps failure keys to counts (:func:`cause_counts`); without them (or for failures they
    miss) the outcome class alone names the cause.
    """
    attempts = sum(n for k, n in outcomes.items() if k not in NOT_ATTEMPTS)
    ok = int(outcomes.get(Outcome.OK.value, 0))
    failed = attempts - ok
    by_key: Counter[str] = Counter({k: int(n) for k, n in (causes or {}).items() if n})
    known: Counter[str] = Counter()
    for k, n in by_key.items():
        known[_parse_key(k).outcome] += n
    for cls, n in outcomes.items():  # failures without a key: the class is the cause
        if cls != Outcome.OK.value and cls not in NOT_ATTEMPTS and n > known.get(cls, 0):
            by_key[cls] += n - known.get(cls, 0)
    top = []
    for key, n in sorted(by_key.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CAUSES]:
        c = _parse_key(key)
        top.append({"key": key, "outcome": c.outcome, "status": c.status, "text": c.text, "count": n})
    dominates = attempts > 0 and failed > DOMINANT_SHARE * attempts
    capacity_signal = bool(top) and top[0]["outcome"] == Outcome.OVERLOADED.value
    headline = None
    if dominates and top:
        cause = _parse_key(top[0]["key"]).describe()
        lead = _pct(failed, attempts) + " of attempts failed"
        lead += f" with {cause}" if top[0]["count"] == failed else f", {_pct(top[0]['count'], attempts)} with {cause}"
        if capacity_signal:
            headline = (f"{lead}: the server refused load above its capacity; latency figures cover only "
                        f"the {_pct(ok, attempts)} served")
        else:
            headline = f"{lead}: the figures describe the failures"
    return FailureVerdict(attempts, ok, failed, failed / attempts if attempts else 0.0, dominates,
                          capacity_signal, dominates and not capacity_signal, headline, top)


def _parse_key(key: str) -> FailureCause:
    """The parts of a key made by :attr:`FailureCause.key`."""
    head, _, text = key.partition(": ")
    outcome, _, status = head.partition(" ")
    return FailureCause(outcome, int(status) if status.isdigit() else None, text)


_OK_MARK = b'"outcome":"ok"'
_DONE_MISSING_MARK = b'"done_missing":true'


def scan_file(path: str | Path, window: tuple[int, int] | None = None) -> tuple[Counter[str], int]:
    """(failure-key counts, ok streams without ``[DONE]``) of the records in a JSONL file.

    For frames read from a file, which keep no error texts. Only records sent inside ``window``
    (``[start_ns, end_ns)`` of ``send_ns``) count when it is given. Compact ok lines without
    ``done_missing`` (the common case) are skipped without parsing.
    """
    causes: Counter[str] = Counter()
    done_missing = 0
    with open(path, "rb") as fh:
        for line in fh:
            if _OK_MARK in line and _DONE_MISSING_MARK not in line:
                continue
            try:
                d = json.loads(line)
            except ValueError:
                continue  # a partial last line
            if not isinstance(d, dict):
                continue
            if window is not None:
                s = d.get("send_ns")
                if not isinstance(s, int) or not window[0] <= s < window[1]:
                    continue
            outcome = d.get("outcome", Outcome.OK.value)
            if outcome == Outcome.OK.value:
                done_missing += bool(d.get("done_missing"))
            elif outcome not in NOT_ATTEMPTS:
                causes[failure_key(outcome, d.get("error_text"))] += 1
    return causes, done_missing
