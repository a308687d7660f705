"""A block of JSONL records -> the frame's per-request columns, vectorized (pyarrow parse, numpy formulas).

The large-run reader (:mod:`harness.analysis.stream`) cannot afford a Python object per record, so this
module computes the same columns as :class:`harness.analysis.frame._Builder` (one call of each
dictionary function per record) with numpy over whole blocks: :data:`VECTOR` holds, per request metric
of :data:`harness.metrics.METRICS`, its formula on columns, written from the dictionary function's
docstring (same operands, same operations in the same order, so every value is bit-identical;
tests/analysis/test_stream_report.py checks each one against the dictionary on varied records). A
request metric without an entry here (one registered by a user) is computed by its dictionary function
on records rebuilt from the block, so it is never missing, only slower.

Parsing: ``pyarrow.json`` with an explicit schema of the fields the metrics read (others are skipped);
a block that pyarrow rejects (a partial line from a killed writer, a value of another type) is re-read
line by line, keeping the lines the tolerant reader of :mod:`harness.analysis.frame` keeps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from harness import metrics as m
from harness.analysis.frame import _FLOAT_COLS, _INT_COLS, GAP_METRICS, OUTCOMES, REQUEST_METRICS
from harness.records import RequestRecord

_I = pa.int64()
_INT_FIELDS = ("intended_ns", "send_ns", "attempt_send_ns", "headers_ns", "end_ns", "first_reasoning_ns",
               "first_answer_ns", "first_tool_call_ns", "tool_call_end_ns", "reasoning_events", "reasoning_tokens",
               "tool_call_tokens", "input_tokens_server", "cached_input_tokens", "input_tokens_client",
               "output_tokens_server", "output_tokens_events", "output_tokens_retokenized", "retries", "turn")
#: the fields the dictionary's request and run metrics read
SCHEMA = pa.schema([*((k, _I) for k in _INT_FIELDS), ("token_ns", pa.list_(_I)), ("tokens_per_event", pa.list_(_I)),
                    ("outcome", pa.string()), ("finish_reason", pa.string()), ("error_text", pa.string()),
                    ("done_missing", pa.bool_())])
#: the same without ``tokens_per_event``, for blocks where every event carries one token (about 15 % faster)
SCHEMA_ONE_TOKEN = pa.schema([f for f in SCHEMA if f.name != "tokens_per_event"])
_TPE_KEY = b'"tokens_per_event"'
_TPE_LIST = re.compile(rb'"tokens_per_event":\[([^\]]*)\]')
BLOCK_BYTES = 1 << 20  #: pyarrow's parse block (a line longer than this is read by the line-by-line path)
_OK_CODE = OUTCOMES.index(m.Outcome.OK.value)
_HTTP_ERROR_CODE = OUTCOMES.index(m.Outcome.HTTP_ERROR.value)


def _parse(data: bytes, schema: pa.Schema, block_bytes: int = BLOCK_BYTES) -> pa.Table:
    return pj.read_json(pa.BufferReader(data), read_options=pj.ReadOptions(use_threads=False, block_size=block_bytes),
                        parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"))


def schema_for(data: bytes) -> pa.Schema:
    """The fields to parse in ``data``: every field when a request metric has no formula here (its
    dictionary function gets whole records), :data:`SCHEMA_ONE_TOKEN` when every ``tokens_per_event``
    list holds only 1s (the per-token ITL is then the ITL: the lists need not be parsed), else :data:`SCHEMA`."""
    if any(k not in VECTOR for k in REQUEST_METRICS):
        return full_schema()
    lists = _TPE_LIST.findall(data)
    if len(lists) == data.count(_TPE_KEY) and not b"".join(lists).translate(None, b"1, "):
        return SCHEMA_ONE_TOKEN
    return SCHEMA


def parse_block(data: bytes, schema: pa.Schema = SCHEMA) -> pa.Table:
    """The records of ``data`` (whole JSONL lines) as a table of ``schema``'s fields (null = absent).

    Lines that are not a JSON object of the record's types are skipped, as the tolerant reader does."""
    try:
        return _parse(data, schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    longest = max(map(len, data.split(b"\n")), default=0)
    if longest >= BLOCK_BYTES // 2:  # a very long stream's line: a block must hold it whole
        try:
            return _parse(data, schema, 2 * longest + 1024)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    tables = []
    for line in data.split(b"\n"):
        if len(line.strip()) < 3:
            continue
        try:
            if not isinstance(json.loads(line), dict):
                continue
            tables.append(pj.read_json(pa.BufferReader(line), read_options=pj.ReadOptions(
                use_threads=False, block_size=max(BLOCK_BYTES, 2 * len(line))), parse_options=pj.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore")))
        except (ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue  # a partial line (process killed mid-write) or a value of another type
    return pa.concat_tables(tables) if tables else schema.empty_table()


def full_schema() -> pa.Schema:
    """Every field of :class:`RequestRecord` (for metrics that need whole records)."""
    from dataclasses import fields

    out = []
    for f in fields(RequestRecord):
        if f.name in SCHEMA.names:
            out.append(SCHEMA.field(f.name))
        else:
            t = str(f.type)
            out.append((f.name, pa.float64() if "float" in t else pa.bool_() if "bool" in t else
                        _I if t.startswith("int") else pa.string()))
    return pa.schema(out)


@dataclass
class Block:
    """One block's parsed fields as numpy arrays (``v_<name>``: present; ints: 0 where absent)."""

    n: int
    i: dict[str, np.ndarray]  #: int fields, 0 where absent
    v: dict[str, np.ndarray]  #: int fields' presence
    tok: np.ndarray  #: all token_ns values, row after row
    tok_off: np.ndarray  #: row r's tokens are tok[tok_off[r]:tok_off[r + 1]]
    tpe: np.ndarray
    tpe_off: np.ndarray
    outcome: np.ndarray  #: outcome codes (index into OUTCOMES); absent = ok
    eos: np.ndarray  #: finish_reason is an end-of-sequence reason
    done_missing: np.ndarray
    table: pa.Table


def _list(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    arr = col.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.fill_null(arr.flatten(), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return flat, np.concatenate(([0], np.cumsum(lengths)))


def block_arrays(table: pa.Table) -> Block:
    """Numpy views of a parsed table's fields."""
    n = table.num_rows
    ints, valid = {}, {}
    for k in _INT_FIELDS:
        c = table.column(k)
        valid[k] = c.is_valid().to_numpy(zero_copy_only=False) if c.null_count else np.ones(n, dtype=bool)
        ints[k] = pc.fill_null(c, 0).to_numpy(zero_copy_only=False).astype(np.int64) if n else np.zeros(0, np.int64)
    tok, tok_off = _list(table.column("token_ns"))
    if "tokens_per_event" in table.column_names:
        tpe, tpe_off = _list(table.column("tokens_per_event"))
    else:  # one token per event (schema_for): no divisor other than 1
        tpe, tpe_off = np.zeros(0, np.int64), np.zeros(n + 1, np.int64)
    oc = table.column("outcome")
    names = pc.fill_null(oc, m.Outcome.OK.value).combine_chunks() if n else pa.array([], pa.string())
    uniq, inv = np.unique(names.to_numpy(zero_copy_only=False).astype(object), return_inverse=True) if n else \
        (np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64))
    codes = np.array([OUTCOMES.index(u) if u in OUTCOMES else _HTTP_ERROR_CODE for u in uniq.tolist()], dtype=np.int8)
    outcome = codes[inv] if n else np.zeros(0, dtype=np.int8)
    eos = pc.fill_null(pc.is_in(table.column("finish_reason"), value_set=pa.array(sorted(m.EOS_FINISH_REASONS))),
                       False).to_numpy(zero_copy_only=False) if n else np.zeros(0, dtype=bool)
    dm = pc.fill_null(table.column("done_missing"), False).to_numpy(zero_copy_only=False) if n else np.zeros(0, bool)
    return Block(n, ints, valid, tok, tok_off, tpe, tpe_off, outcome.astype(np.int8), np.asarray(eos, dtype=bool),
                 np.asarray(dm, dtype=bool), table)


# ----------------------------------------------------------------------------- per-request formulas

_NAN = np.nan


def _ms(diff_ns: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``diff / NS_PER_MS`` where ``ok``, else NaN (int / int in Python: one correctly rounded division)."""
    return np.where(ok, diff_ns.astype(np.float64) / m.NS_PER_MS, _NAN)


def _or(b: Block, a: str, fallback: str) -> tuple[np.ndarray, np.ndarray]:
    """``a if a is not None else fallback`` and whether the result is present."""
    va = b.v[a]
    return np.where(va, b.i[a], b.i[fallback]), va | b.v[fallback]


def _n_events(b: Block) -> np.ndarray:
    return np.diff(b.tok_off)


def _first_last(b: Block) -> tuple[np.ndarray, np.ndarray]:
    n = _n_events(b)
    has = n > 0
    first = np.where(has, b.tok[np.minimum(b.tok_off[:-1], max(len(b.tok) - 1, 0))] if len(b.tok) else 0, 0)
    last = np.where(has, b.tok[np.maximum(b.tok_off[1:] - 1, 0)] if len(b.tok) else 0, 0)
    return first, last


def _output_tokens(b: Block) -> np.ndarray:
    return np.where(b.v["output_tokens_server"], b.i["output_tokens_server"], b.i["output_tokens_events"])


def _ttft(b: Block) -> np.ndarray:
    first, _ = _first_last(b)
    return _ms(first - b.i["send_ns"], (_n_events(b) > 0) & b.v["send_ns"])


def _ttft_intended(b: Block) -> np.ndarray:
    start, has = _or(b, "intended_ns", "send_ns")
    first, _ = _first_last(b)
    return _ms(first - start, (_n_events(b) > 0) & has)


def _ttfb(b: Block) -> np.ndarray:
    start, has = _or(b, "attempt_send_ns", "send_ns")
    return _ms(b.i["headers_ns"] - start, b.v["headers_ns"] & has)


def _tpot(b: Block) -> np.ndarray:
    n = _output_tokens(b)
    first, last = _first_last(b)
    ok = (_n_events(b) >= 1) & (n >= 2)
    per = (last - first).astype(np.float64) / np.where(ok, n - 1, 1).astype(np.float64)
    return np.where(ok, per / m.NS_PER_MS, _NAN)


def _e2e(b: Block) -> np.ndarray:
    return _ms(b.i["end_ns"] - b.i["send_ns"], b.v["end_ns"] & b.v["send_ns"])


def _e2e_intended(b: Block) -> np.ndarray:
    start, has = _or(b, "intended_ns", "send_ns")
    return _ms(b.i["end_ns"] - start, b.v["end_ns"] & has)


def _schedule_lag(b: Block) -> np.ndarray:
    return _ms(b.i["send_ns"] - b.i["intended_ns"], b.v["send_ns"] & b.v["intended_ns"])


def _ttft_answer(b: Block) -> np.ndarray:
    first_tok, _ = _first_last(b)
    fallback_ok = (_n_events(b) > 0) & (b.i["reasoning_events"] == 0) & ~b.v["first_tool_call_ns"]
    first = np.where(b.v["first_answer_ns"], b.i["first_answer_ns"], first_tok)
    return _ms(first - b.i["send_ns"], b.v["send_ns"] & (b.v["first_answer_ns"] | fallback_ok))


def _since_send(field: str) -> Callable[[Block], np.ndarray]:
    def f(b: Block) -> np.ndarray:
        return _ms(b.i[field] - b.i["send_ns"], b.v[field] & b.v["send_ns"])
    return f


def _reasoning_tokens(b: Block) -> np.ndarray:
    return np.where(b.i["reasoning_events"] != 0, b.i["reasoning_tokens"].astype(np.float64), _NAN)


def _answer_tokens(b: Block) -> np.ndarray:
    has = (b.i["reasoning_events"] != 0) | b.v["first_tool_call_ns"]
    v = b.i["output_tokens_events"] - b.i["reasoning_tokens"] - b.i["tool_call_tokens"]
    return np.where(has, v.astype(np.float64), _NAN)


def _reasoning_share(b: Block) -> np.ndarray:
    ev = b.i["output_tokens_events"]
    ok = (b.i["reasoning_events"] != 0) & (ev != 0)
    return np.where(ok, b.i["reasoning_tokens"].astype(np.float64) / np.where(ok, ev, 1), _NAN)


def _input_tokens(b: Block) -> tuple[np.ndarray, np.ndarray]:
    return _or(b, "input_tokens_server", "input_tokens_client")


def _cached_tokens(b: Block) -> np.ndarray:
    return np.where(b.v["cached_input_tokens"], b.i["cached_input_tokens"].astype(np.float64), _NAN)


def _cached_share(b: Block) -> np.ndarray:
    n, has = _input_tokens(b)
    ok = b.v["cached_input_tokens"] & has & (n != 0)
    return np.where(ok, b.i["cached_input_tokens"].astype(np.float64) / np.where(ok, n, 1), _NAN)


#: request metric name -> its dictionary formula on a block's columns (float64, NaN = the function's None)
VECTOR: dict[str, Callable[[Block], np.ndarray]] = {
    "ttft": _ttft, "ttft_intended": _ttft_intended, "ttfb": _ttfb, "tpot": _tpot, "e2e": _e2e,
    "e2e_intended": _e2e_intended, "schedule_lag": _schedule_lag, "ttft_answer": _ttft_answer,
    "ttft_reasoning": _since_send("first_reasoning_ns"), "reasoning_tokens": _reasoning_tokens,
    "answer_tokens": _answer_tokens, "reasoning_share": _reasoning_share,
    "ttft_tool_call": _since_send("first_tool_call_ns"), "tool_call": _since_send("tool_call_end_ns"),
    "cached_tokens": _cached_tokens, "cached_share": _cached_share,
}


def records_of(table: pa.Table) -> list[RequestRecord]:
    """Records rebuilt from a table (absent fields take the record's defaults), for dictionary calls."""
    return [RequestRecord.from_dict({k: v for k, v in d.items() if v is not None}) for d in table.to_pylist()]


def gaps_of(b: Block) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gap ns, itl_per_token divisor, row) of every gap between consecutive token events, all rows."""
    n = _n_events(b)
    rows = np.repeat(np.arange(b.n), np.maximum(n - 1, 0))
    if not len(rows):
        return np.zeros(0, np.int64), np.ones(0, np.int64), rows
    starts = b.tok_off[:-1]
    pos = np.arange(len(b.tok))
    not_first = np.ones(len(b.tok), dtype=bool)
    not_first[starts[n > 0]] = False
    idx = pos[not_first]  # index of the later event of each gap
    gap = b.tok[idx] - b.tok[idx - 1]
    i_in_row = idx - starts[rows]  # 1-based position of the later event
    k = np.ones(len(idx), dtype=np.int64)
    if not len(b.tpe) or b.tpe.max() <= 1:
        return gap, k, rows  # every divisor is 1 (one token per event, or a count <= 0)
    tpe_len = np.diff(b.tpe_off)
    has = i_in_row < tpe_len[rows]
    if has.any():
        kv = b.tpe[b.tpe_off[rows[has]] + i_in_row[has]]
        k[has] = np.where(kv > 0, kv, 1)
    return gap, k, rows


@dataclass
class Columns:
    """A block's frame columns (as :class:`harness.analysis.frame.RunFrame` holds them) and extras."""

    cols: dict[str, np.ndarray]
    gaps: dict[str, np.ndarray]  #: ok requests' gaps (ms), in row order; itl_per_token may be itl itself
    gap_row: np.ndarray
    block: Block


def columns(b: Block, slo: m.Slo | None = None) -> Columns:
    """The frame's columns of a block, bit-identical to the per-record builder's."""
    n = b.n
    cols: dict[str, np.ndarray] = {}
    missing = [k for k in REQUEST_METRICS if k not in VECTOR]
    recs = records_of(b.table) if missing else None
    for name in REQUEST_METRICS:
        if name in VECTOR:
            cols[name] = VECTOR[name](b)
        else:
            fn = m.METRICS[name].fn
            cols[name] = np.array([_NAN if (v := fn(r)) is None else v for r in recs], dtype=np.float64)  # type: ignore[union-attr]
    out_tok = _output_tokens(b)
    cols["output_tokens"] = out_tok.astype(np.float64)
    srv, vs = b.i["output_tokens_server"], b.v["output_tokens_server"]
    client = np.where(b.v["output_tokens_retokenized"], b.i["output_tokens_retokenized"], b.i["output_tokens_events"])
    mism = np.where(b.eos & (srv == client + 1), 0.0, (client != srv).astype(np.float64))
    cols["token_mismatch"] = np.where(vs, mism, _NAN)
    cols["output_tokens_server"] = np.where(vs, srv.astype(np.float64), _NAN)
    cols["output_tokens_events"] = b.i["output_tokens_events"].astype(np.float64)
    cols["output_tokens_retokenized"] = np.where(b.v["output_tokens_retokenized"],
                                                 b.i["output_tokens_retokenized"].astype(np.float64), _NAN)
    n_in, has_in = _input_tokens(b)
    cols["input_tokens"] = np.where(has_in, n_in.astype(np.float64), _NAN)
    for k in ("send_ns", "end_ns", "intended_ns"):
        cols[k] = np.where(b.v[k], b.i[k], -1)
    ne = _n_events(b)
    first, last = _first_last(b)
    cols["first_token_ns"] = np.where(ne > 0, first, -1)
    cols["last_token_ns"] = np.where(ne > 0, last, -1)
    cols["n_events"] = ne.astype(np.int64)
    ok = b.outcome == _OK_CODE
    cols["ok"] = ok
    gap_ns, k, rows = gaps_of(b)
    itl_all = gap_ns.astype(np.float64) / m.NS_PER_MS
    if slo is None:
        cols["slo_met"] = ok.copy()
    else:
        max_gap = np.zeros(n)  # max(itl_ms(r), default=0.0)
        if len(rows):
            max_gap[rows] = -np.inf
            np.maximum.at(max_gap, rows, itl_all)
        met = ok.copy()
        for bound, v in ((slo.ttft_ms, cols["ttft"]), (slo.itl_ms, max_gap), (slo.tpot_ms, cols["tpot"]),
                         (slo.e2e_ms, cols["e2e"])):
            if bound is not None:
                met &= ~np.isnan(v) & (v <= bound)
        cols["slo_met"] = met
    cols["retries"] = b.i["retries"].copy()
    cols["outcome"] = b.outcome
    cols["eos_end"] = b.eos.astype(np.int64)
    cols["turn"] = np.where(b.v["turn"], b.i["turn"], -1)
    keep = ok[rows] if len(rows) else np.zeros(0, dtype=bool)
    itl = itl_all[keep]
    itl_pt = (itl_all / k)[keep] if (k[keep] != 1).any() else itl
    if itl_pt is not itl and np.array_equal(itl, itl_pt):
        itl_pt = itl
    gaps = {"itl": itl, "itl_per_token": itl_pt}
    assert set(gaps) == set(GAP_METRICS)
    for name in _INT_COLS:
        if name not in ("ok", "slo_met", "outcome"):
            cols[name] = cols[name].astype(np.int64)
    assert all(c in cols for c in (*_FLOAT_COLS, *_INT_COLS))
    return Columns(cols, gaps, rows[keep], b)
