"""Varied request records for the large-run reader's tests: every field the metrics read, present or not."""

from __future__ import annotations

import numpy as np

from harness.records import Outcome, RequestRecord

MS = 1_000_000


def varied(n: int, seed: int = 0) -> list[RequestRecord]:
    """``n`` records mixing outcomes, bundled events, reasoning, tool calls, cached input, turns, retries,
    EOS finishes with a server count one above the client's, absent times and open-loop lag."""
    rng = np.random.default_rng(seed)
    out, t = [], 10**13
    outcomes = [o.value for o in Outcome]
    for i in range(n):
        t += int(rng.integers(1, 40)) * MS // 7
        send = t
        intended = send - int(rng.integers(0, 3 * MS)) if i % 3 == 0 else (None if i % 17 == 0 else send)
        outcome = "ok" if rng.random() < 0.8 else outcomes[int(rng.integers(1, len(outcomes)))]
        k = int(rng.integers(0, 12)) if outcome in ("ok", "timeout", "incomplete") else 0
        first = send + int(rng.lognormal(np.log(40 * MS), 0.5))
        toks = (first + np.cumsum(np.r_[0, rng.gamma(2.0, 3 * MS, max(k - 1, 0))]).astype(np.int64)).tolist()[:k]
        tpe = [int(x) for x in rng.integers(1, 4, k)] if i % 5 == 0 else [1] * k
        if i % 11 == 0 and tpe:
            tpe = tpe[:-1]  # shorter than the events
        reasoning = i % 7 == 0 and k > 2
        tool = i % 13 == 0 and k > 1
        srv = (sum(tpe) + (1 if i % 9 == 0 else 0)) if i % 4 else None
        end = (toks[-1] if toks else send) + int(rng.integers(0, 2 * MS)) if i % 29 else None
        r = RequestRecord(request_id=str(i), worker=f"w{i % 2}", intended_ns=intended, send_ns=send if i % 31 else None,
                          attempt_send_ns=send + MS if i % 8 == 0 else None,
                          headers_ns=send + int(rng.integers(1, 5 * MS)) if i % 6 else None,
                          token_ns=toks, tokens_per_event=tpe, end_ns=end,
                          outcome=outcome, http_status=200 if outcome == "ok" else 500,
                          error_text=None if outcome == "ok" else f"HTTP 500: boom {i % 3} at 10.0.0.{i % 5}:8080",
                          finish_reason=["eos_token", "stop", "length", None][i % 4],
                          done_missing=outcome == "ok" and i % 10 == 0,
                          input_tokens_server=int(rng.integers(0, 300)) if i % 3 else None,
                          input_tokens_client=int(rng.integers(0, 300)) if i % 2 else None,
                          cached_input_tokens=int(rng.integers(0, 100)) if i % 5 == 1 else None,
                          output_tokens_server=srv, output_tokens_events=sum(tpe),
                          output_tokens_retokenized=sum(tpe) + 1 if i % 10 == 3 else None,
                          reasoning_events=2 if reasoning else 0, reasoning_tokens=3 if reasoning else 0,
                          first_reasoning_ns=toks[0] if reasoning else None,
                          first_answer_ns=toks[2] if reasoning else None,
                          first_tool_call_ns=toks[1] if tool else None, tool_call_end_ns=toks[-1] if tool else None,
                          tool_call_tokens=1 if tool else 0, retries=int(i % 19 == 0), turn=(i % 4) + 1 if i % 2 else None)
        out.append(r)
        t = end or t
    return out
