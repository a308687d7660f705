"""Per-request token choice inside a batch, in TGI's order.

For each row of the batch logits (float32):
1. repetition_penalty r (HF/TGI): for every token id seen in the prompt or output, a score s becomes
   ``s * r`` when ``s < 0`` else ``s / r``;
2. frequency_penalty f (TGI): ``s -= f * count(token) / n``, with ``n`` the number of prompt + output
   tokens so far;
3. warpers when sampling: temperature (``s / T``), top_k (keep the k best), top_p (keep the smallest
   set of best tokens whose probability mass reaches p), typical_p (HF's locally typical sampling);
4. choice: argmax (greedy) or a draw from ``softmax(s)`` with the request's own seeded
   ``torch.Generator`` (same seed -> same draws, whatever else is in the batch).

logprobs (the chosen token's and ``top_n_tokens``) are ``log_softmax`` of the same processed scores
the choice used, as in TGI. Rows with no processing take a vectorized fast path (argmax over the batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.server.backends.base import SamplingParams

#: top_p looks at this many best tokens first and sorts the whole vocabulary only when they hold
#: less than p of the mass (exact either way)
TOP_P_PREFIX = 256


@dataclass
class RowSampler:
    """Sampling state of one request."""

    params: SamplingParams
    history: list[int]  #: prompt + generated ids (for the penalties)
    generator: torch.Generator | None = None
    needs_processing: bool = field(init=False)

    def __post_init__(self) -> None:
        p = self.params
        self.needs_processing = bool(
            p.do_sample
            or (p.repetition_penalty is not None and p.repetition_penalty != 1.0)
            or (p.frequency_penalty is not None and p.frequency_penalty != 0.0)
        )


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator seeded with ``seed`` (taken modulo 2**63 so any u64 works)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) % (2**63))
    return gen


def _penalize(scores: torch.Tensor, row: RowSampler) -> None:
    p = row.params
    ids = torch.tensor(row.history, dtype=torch.long, device=scores.device)
    if p.repetition_penalty is not None and p.repetition_penalty != 1.0:
        seen = scores.gather(0, ids)
        seen = torch.where(seen < 0, seen * p.repetition_penalty, seen / p.repetition_penalty)
        scores.scatter_(0, ids, seen)
    if p.frequency_penalty is not None and p.frequency_penalty != 0.0:
        freq = torch.zeros_like(scores).scatter_add_(0, ids, torch.ones_like(ids, dtype=scores.dtype))
        scores.sub_(freq * (p.frequency_penalty / len(row.history)))


def _top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep tokens whose preceding (better) mass is < top_p; at least one token."""
    k = min(TOP_P_PREFIX, scores.numel())
    probs = torch.softmax(scores, -1)
    best, idx = torch.topk(probs, k)
    if float(best.sum()) < top_p and k < scores.numel():
        best, idx = torch.sort(probs, descending=True)
    before = best.cumsum(-1) - best
    keep = before < top_p
    keep[0] = True
    out = torch.full_like(scores, float("-inf"))
    out[idx[keep]] = scores[idx[keep]]
    return out


def _typical_p(scores: torch.Tensor, mass: float) -> torch.Tensor:
    """HF's TypicalLogitsWarper for one row."""
    logp = torch.log_softmax(scores, -1)
    p = logp.exp()
    ent = -torch.nansum(logp * p)
    shifted = (-logp - ent).abs()
    sorted_shift, order = torch.sort(shifted)
    cum = p[order].cumsum(-1)
    last = int((cum < mass).sum().clamp(max=scores.numel() - 1))
    remove = sorted_shift > sorted_shift[last]
    remove[0] = False
    out = scores.clone()
    out[order[remove]] = float("-inf")
    return out


def _warp(scores: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    if p.temperature is not None and p.temperature != 1.0:
        scores = scores / p.temperature
    if p.top_k is not None and 0 < p.top_k < scores.numel():
        kth = torch.topk(scores, p.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if p.top_p is not None and p.top_p < 1.0:
        scores = _top_p(scores, p.top_p)
    if p.typical_p is not None and p.typical_p < 1.0:
        scores = _typical_p(scores, p.typical_p)
    return scores


@dataclass
class Choice:
    """The chosen tokens of one batch step, as Python values."""

    ids: list[int]
    logprobs: list[float]
    top: list[list[tuple[int, float]]]  #: per row: (id, logprob) best first; empty when not asked


def choose(logits: torch.Tensor, rows: list[RowSampler]) -> Choice:
    """Pick one token per row of ``logits`` ([B, V]) following each row's parameters."""
    scores = logits.float()
    special = [i for i, r in enumerate(rows) if r.needs_processing]
    sampled: dict[int, int] = {}
    if special:
        scores = scores.clone() if scores.data_ptr() == logits.data_ptr() else scores
        for i in special:
            row = rows[i]
            s = scores[i]
            _penalize(s, row)
            if row.params.do_sample:
                s = _warp(s, row.params)
            # extreme legal values (repetition_penalty 1e-308, temperature 1e-300) overflow to
            # inf/NaN: keep the row's scores finite so one request cannot fail the batch
            s = torch.nan_to_num(s, nan=float("-inf"), posinf=torch.finfo(s.dtype).max, neginf=float("-inf"))
            scores[i] = s
            if row.params.do_sample:
                probs = torch.softmax(s, -1)
                if bool(torch.isfinite(probs).all()):  # else every score is -inf: argmax below
                    sampled[i] = int(torch.multinomial(probs, 1, generator=row.generator))
    lse = torch.logsumexp(scores, -1)
    ids = scores.argmax(-1)
    if sampled:
        for i, tok in sampled.items():
            ids[i] = tok
    chosen = (scores.gather(1, ids[:, None])[:, 0] - lse)
    want_top = [i for i, r in enumerate(rows) if r.params.top_n_tokens > 0]
    top: list[list[tuple[int, float]]] = [[] for _ in rows]
    if want_top:
        n = max(rows[i].params.top_n_tokens for i in want_top)
        sel = torch.tensor(want_top, dtype=torch.long, device=scores.device)
        vals, idx = torch.topk(scores.index_select(0, sel), min(n, scores.shape[-1]), dim=-1)
        vals = (vals - lse.index_select(0, sel)[:, None]).tolist()
        idx = idx.tolist()
        for j, i in enumerate(want_top):
            k = rows[i].params.top_n_tokens
            top[i] = [(t, v) for t, v in zip(idx[j][:k], vals[j][:k], strict=True) if v != float("-inf")]
    return Choice(ids.tolist(), chosen.tolist(), top)
