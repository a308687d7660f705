"""The failure rule (harness.analysis.failures): stable keys, the headline in summary.md (records and
files, steady window), report.html, streams without [DONE], and sweeps' capacity table."""

from __future__ import annotations

import json

import pytest
from synthetic_runs import closed_loop, write_run

from harness.analysis.capacity import Point, capacity, check_point, recommend
from harness.analysis.failures import DOMINANT_SHARE, TEXT_MAX, failure_cause, failure_key, failure_verdict
from harness.analysis.frame import load_frame
from harness.analysis.report import build_report
from harness.analysis.summary import summarize, summarize_frame, to_markdown
from harness.records import RequestRecord

MS = 1_000_000


@pytest.mark.parametrize("outcome,text,key", [
    # today's client wording and the contract's new wording give one key
    ("connect_error", "cannot connect to 127.0.0.1:9: Connection refused", "connect_error: connection refused"),
    ("connect_error", "connection refused (127.0.0.1:9)", "connect_error: connection refused"),
    ("connect_error", "cannot connect to [::1]:8080: Connection refused", "connect_error: connection refused"),
    ("http_error", "HTTP 400 invalid_request_error: bad id 0123456789abcdef0123",
     "http_error 400: invalid_request_error: bad id <id>"),
    ("http_error", "HTTP 400 invalid_request_error: bad id 3f2b9c1e-8a4d-4e6f-9b2a-1c3d5e7f9a0b",
     "http_error 400: invalid_request_error: bad id <id>"),
    ("validation", "HTTP 422 validation: prompt has 3000 tokens, at most 2048 allowed",
     "validation 422: prompt has N tokens, at most N allowed"),
    ("http_error", "HTTP 404: model SmolLM2-135M-Instruct not found", "http_error 404: model SmolLM2-135M-Instruct not found"),
    ("overloaded", "HTTP 429 overloaded: Model is overloaded", "overloaded 429"),
    ("overloaded", "HTTP 503: Service Unavailable", "overloaded 503"),
    ("overloaded", "error event overloaded: Model is overloaded", "overloaded"),
    ("timeout", "no data for 60s (read timeout)", "timeout: read timeout"),
    ("timeout", "no token for 12.5s (read timeout)", "timeout: read timeout"),
    ("timeout", "total timeout of 600s passed", "timeout: total timeout"),
    ("http_error", "HTTP 500 Internal Server Error: Internal Server Error", "http_error 500: Internal Server Error"),
    ("incomplete", None, "incomplete"),
])
def test_failure_keys_are_stable(outcome, text, key):
    assert failure_key(outcome, text) == key


def test_failure_key_text_is_bounded():
    cause = failure_cause("http_error", "HTTP 400: " + "word " * 100)
    assert cause.status == 400 and len(cause.text) <= TEXT_MAX


def test_verdict_rule():
    flood = failure_verdict({"ok": 2, "connect_error": 98, "cancelled": 4},
                            {"connect_error: connection refused": 98})
    assert flood.attempts == 100 and flood.failed == 98  # cancelled by the harness: not an attempt
    assert flood.dominates and flood.inconclusive and not flood.capacity_signal
    assert flood.headline == ("98 % of attempts failed with connect_error (connection refused): "
                              "the figures describe the failures")
    mixed = failure_verdict({"ok": 10, "http_error": 80, "timeout": 10}, {"http_error 400: bad": 80})
    assert mixed.headline.startswith("90 % of attempts failed, 80 % with http_error 400 (server: 'bad')")
    refused = failure_verdict({"ok": 30, "overloaded": 70}, {"overloaded 429": 70})
    assert refused.dominates and refused.capacity_signal and not refused.inconclusive
    assert "overloaded 429" in refused.headline and "30 % served" in refused.headline
    # exactly at the share: not dominating; no attempts: nothing to say
    n = 100
    half = failure_verdict({"ok": n - int(n * DOMINANT_SHARE), "http_error": int(n * DOMINANT_SHARE)})
    assert not half.dominates and half.headline is None
    assert failure_verdict({"cancelled": 3}).headline is None
    # a failure the caller could not key is named by its class
    assert failure_verdict({"ok": 0, "timeout": 5}).top[0]["key"] == "timeout"


def _failed(i: int, t: int, outcome: str, text: str, status: int | None = None) -> RequestRecord:
    return RequestRecord(request_id=f"f{i}", user="u0", intended_ns=t, send_ns=t, attempt_send_ns=t, end_ns=t + MS,
                         outcome=outcome, error_text=text, http_status=status)


def _flood(n_ok: int, n_bad: int) -> list[RequestRecord]:
    ok = closed_loop(n_ok, users=1)
    t = ok[-1].end_ns + MS
    bad = [_failed(i, t + i * 2 * MS, "http_error", "HTTP 400 invalid_request_error: Invalid request id "
                   f"{i:016x}", 400) for i in range(n_bad)]
    return ok + bad


def test_summary_md_first_line_from_records_and_from_file(tmp_path):
    recs = _flood(3, 97)
    want = ("97 % of attempts failed with http_error 400 (server: 'invalid_request_error: Invalid request id <id>'): "
            "the figures describe the failures")
    s = summarize(recs)
    assert s["failures"]["headline"] == want and s["failed_share"] == pytest.approx(0.97)
    md = to_markdown(s)
    assert md.splitlines()[0] == f"**{want}**"
    assert md.index(want) < md.index("ttft")  # before any latency figure
    assert "| http_error 400: invalid_request_error: Invalid request id <id> | 97 |" in md
    # the same run read back from its file (a frame without error texts): same verdict
    write_run(tmp_path / "run", recs)
    s2 = summarize_frame(load_frame(tmp_path / "run"))
    assert s2["failures"] == s["failures"]
    # a window holding only the ok requests: nothing dominates there
    ok_window = (recs[0].send_ns, recs[2].end_ns)
    s3 = summarize_frame(load_frame(tmp_path / "run"), steady_window=ok_window)
    assert s3["failures"]["headline"] is None and not to_markdown(s3).startswith("**")


def test_no_headline_when_most_requests_are_ok():
    recs = closed_loop(40, users=2, overloaded_every=4)  # 25 % overloaded
    s = summarize(recs)
    assert s["failures"]["dominates"] is False and s["failures"]["headline"] is None
    assert to_markdown(s, "T").startswith("# T")
    assert s["failures"]["top"][0]["count"] == 10


def test_streams_without_done_are_counted(tmp_path):
    recs = closed_loop(10, users=1)
    for r in recs[:3]:
        r.done_missing = True  # ok streams that ended after their finish_reason without [DONE]
    s = summarize(recs)
    assert s["done_missing"] == 3
    assert "| streams without [DONE] (requests) | 3 |" in to_markdown(s)
    write_run(tmp_path / "run", recs)
    assert summarize_frame(load_frame(tmp_path / "run"))["done_missing"] == 3
    assert "streams without [DONE]" not in to_markdown(summarize(closed_loop(4, users=1)))


def test_report_html_states_the_failure_first(tmp_path):
    write_run(tmp_path / "run", _flood(2, 60))
    rep = build_report(tmp_path / "run", tmp_path / "out", steady=False)
    html = rep.html.read_text()
    head = rep.summary["failures"]["headline"]
    assert head and "http_error 400" in head
    assert html.index("class='fail'") < html.index('class="cards"') and "Failure causes" in html
    assert (tmp_path / "out" / "summary.md").read_text().splitlines()[0] == f"**{head}**"
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["failures"]["inconclusive"] is True


def _summary(ok: int, **failed: int) -> dict:
    outcomes = {"ok": ok, **failed}
    causes = {(f"{k} 400: bad" if k == "http_error" else k): n for k, n in failed.items()}
    v = failure_verdict(outcomes, causes)
    return {"ok": ok, "outcomes": outcomes, "failures": v.as_dict(), "ttft_p95_ms": 100.0 if ok else None,
            "error_rate": (sum(failed.values()) / (ok + sum(failed.values()))),
            "overload_rate": failed.get("overloaded", 0) / (ok + sum(failed.values())),
            "goodput": float(ok), "output_tokens_per_s": ok * 10.0}


def test_capacity_never_reads_a_failure_flood_as_capacity():
    slo = {"ttft": ("ttft_p95_ms", 500.0)}
    flood = _summary(1, http_error=99)
    c = check_point(flood, slo, 0.01)
    assert c.inconclusive and not c.point_ok and c.failures[0].startswith("inconclusive: failures: ")
    # cap 4: fine at 1 and 2 users, a flood of 400s at 4: its capacity is 2 users, the rest inconclusive
    pts = [Point(4, 1, _summary(100)), Point(4, 2, _summary(100)), Point(4, 4, flood),
           Point(8, 1, _summary(100)), Point(8, 2, _summary(100)), Point(8, 4, _summary(30, overloaded=70))]
    table = {t.cap: t for t in capacity(pts, slo)}
    assert table[4].max_load == 2 and table[4].inconclusive and table[4].limiting.startswith("inconclusive at 4 users")
    # refusals above the cap are a capacity signal: cap 8 fails at 4 on its error rate, not "inconclusive"
    assert table[8].max_load == 2 and not table[8].inconclusive and "error rate 70.0%" in table[8].limiting
    # every point a flood (e.g. a wrong --host): the recommendation says inconclusive, not "no cap met the SLO"
    rec = recommend(capacity([Point(4, 1, flood), Point(8, 1, flood)], slo))
    assert rec.cap is None and rec.reason.startswith("inconclusive: failures") and "no cap met" not in rec.reason
    # a summary written before the rule existed: the rule is applied to its outcome counts
    old = {k: v for k, v in flood.items() if k != "failures"}
    assert check_point(old, slo, 0.01).inconclusive
