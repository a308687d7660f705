"""Open-loop arrival processes: constant, Poisson, gamma (burstiness) and trace replay."""

from __future__ import annotations

import itertools
import json
import statistics

import pytest

from harness.workload import arrival_times, load_trace


def take(it, n):
    return list(itertools.islice(it, n))


def gaps(offsets):
    return [b - a for a, b in zip([0.0, *offsets], offsets, strict=False)]


def test_constant_is_evenly_spaced_absolute_offsets():
    assert take(arrival_times("constant", 4.0), 4) == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_poisson_mean_rate_and_cv_and_seed():
    t = take(arrival_times("poisson", 50.0, seed=7), 20000)
    g = gaps(t)
    assert all(b >= a for a, b in zip(t, t[1:], strict=False))
    assert statistics.mean(g) == pytest.approx(1 / 50, rel=0.05)
    assert statistics.stdev(g) / statistics.mean(g) == pytest.approx(1.0, abs=0.05)
    assert take(arrival_times("poisson", 50.0, seed=7), 100) == t[:100]
    assert take(arrival_times("poisson", 50.0, seed=8), 100) != t[:100]


@pytest.mark.parametrize("cv", [0.5, 1.0, 3.0])
def test_gamma_cv_is_burstiness(cv):
    g = gaps(take(arrival_times("gamma", 20.0, seed=1, cv=cv), 20000))
    assert statistics.mean(g) == pytest.approx(1 / 20, rel=0.08)
    assert statistics.stdev(g) / statistics.mean(g) == pytest.approx(cv, rel=0.1)


def test_trace_plain_and_jsonl_and_rescale(tmp_path):
    plain = tmp_path / "t.txt"
    plain.write_text("# seconds\n100.0\n100.5\n101.0\n\n103.0\n")
    assert list(arrival_times("trace", 0, trace_path=plain)) == [0.0, 0.5, 1.0, 3.0]
    jl = tmp_path / "t.jsonl"
    jl.write_text("\n".join(json.dumps({"timestamp": t}) for t in
                            ["2024-01-01T00:00:00", "2024-01-01T00:00:02", 1704067206.0 + 0]) + "\n")
    offs = load_trace(jl)
    assert offs[:2] == [0.0, 2.0]
    # rate > 0 rescales to that mean rate: 3 gaps over 3 s (rate 1/s) -> at 3/s, 1 s in all
    assert load_trace(plain, rate=3.0) == pytest.approx([0.0, 1 / 6, 1 / 3, 1.0])


@pytest.mark.parametrize(("content", "message"), [
    ("1\n0.5\n", "line 2: timestamps must be non-decreasing"),
    ("1\nabc\n", "line 2: timestamp must be"),
    ('{"t": 1}\n', "line 1: missing 'timestamp'"),
    ("", "no timestamps"),
])
def test_trace_errors(tmp_path, content, message):
    f = tmp_path / "bad.txt"
    f.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_trace(f)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "weibull", "rate": 1.0}, "unknown arrival"), ({"kind": "poisson", "rate": 0}, "rate must be > 0"),
    ({"kind": "gamma", "rate": 1.0, "cv": 0}, "cv must be > 0"), ({"kind": "trace", "rate": 1.0}, "trace file"),
])
def test_arrival_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        arrival_times(**kwargs)


def test_trace_ignores_rate_in_arrival_times(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("5\n6\n8\n")
    assert list(arrival_times("trace", 123.0, trace_path=f)) == [0.0, 1.0, 3.0]
