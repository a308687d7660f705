"""Request parsing and TGI's parameter validation, with TGI's texts, in TGI's order.

Order (``router/src/infer/mod.rs`` then ``router/src/validation.rs``):

1. :func:`parse_body`: JSON syntax (400) and types (422), as TGI's axum extractor.
2. :func:`check_before_permit`: stream-only checks (``best_of``, ``decoder_input_details``) and the
   ``best_of`` range; the caller then takes the admission permit (overloaded beats what follows).
3. :func:`validate`: best_of/sampling; temperature, repetition_penalty, frequency_penalty, top_p,
   typical_p, top_k; max_new_tokens == 0, stop count, seed with best_of, top_n_tokens; empty
   inputs, truncate; tokenize; max total tokens (classic full-value rule), input length; grammar.

Every failure raises :class:`~harness.server.infer_errors.ValidationFailed` (422 ``validation``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TypeVar

import pydantic

from harness.server.backends.base import Backend, SamplingParams
from harness.server.config import ServerConfig
from harness.server.infer_errors import RequestRejected, ValidationFailed
from harness.server.schemas import GenerateParameters

M = TypeVar("M", bound=pydantic.BaseModel)


def parse_body(raw: bytes, model: type[M]) -> M:
    """Parse ``raw`` into ``model``; bad JSON -> 400, wrong shape or type -> 422 (TGI's texts)."""
    try:
        return model.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        if err["type"] == "json_invalid":
            raise RequestRejected(400, f"Failed to parse the request body as JSON: {err['msg']}") from None
        loc = ".".join(str(x) for x in err["loc"]) or "body"
        raise RequestRejected(
            422, f"Failed to deserialize the JSON body into the target type: {loc}: {err['msg']}") from None


@dataclass(slots=True)
class ValidRequest:
    """A validated generation request, ready for ``backend.submit``."""

    inputs: str
    input_ids: list[int]
    params: SamplingParams
    details: bool
    decoder_input_details: bool
    return_full_text: bool
    best_of: int
    seed_given: bool


def default_parameters() -> GenerateParameters:
    """TGI ``default_parameters()``: used when the ``parameters`` key is absent (samples)."""
    return GenerateParameters(do_sample=True)


def check_before_permit(p: GenerateParameters, cfg: ServerConfig, *, stream: bool) -> int:
    """Stream-only checks and the best_of range; returns best_of (>= 1)."""
    best_of = 1 if p.best_of is None else p.best_of
    if stream:
        if best_of != 1:
            raise ValidationFailed("`best_of` != 1 is not supported when streaming tokens")
        if p.decoder_input_details:
            raise ValidationFailed("`decoder_input_details` == true is not supported when streaming tokens")
    if best_of != 1:
        if cfg.max_best_of == 1:
            raise ValidationFailed("`best_of` != 1 is not allowed for this endpoint")
        if best_of == 0 or best_of > cfg.max_best_of:
            raise ValidationFailed(f"`best_of` must be > 0 and <= {cfg.max_best_of}. Given: {best_of}")
    return best_of


def validate(backend: Backend, cfg: ServerConfig, inputs: str, p: GenerateParameters, *,
             return_full_text_default: bool) -> ValidRequest:
    """TGI ``Validation::validate`` (see the module docstring for the order)."""
    best_of = 1 if p.best_of is None else p.best_of
    do_sample = bool(p.do_sample)
    sampling = do_sample or any(v is not None for v in (p.temperature, p.top_k, p.top_p, p.typical_p))
    if best_of > 1 and not sampling:
        raise ValidationFailed("you must use sampling when `best_of` is > 1")
    if p.temperature is not None and p.temperature <= 0:
        raise ValidationFailed("`temperature` must be strictly positive")
    if p.repetition_penalty is not None and p.repetition_penalty <= 0:
        raise ValidationFailed("`repetition_penalty` must be strictly positive")
    if p.frequency_penalty is not None and not -2.0 <= p.frequency_penalty <= 2.0:
        raise ValidationFailed("`frequency_penalty` must be >= -2.0 and <= 2.0")
    if p.top_p is not None and not 0.0 < p.top_p < 1.0:
        raise ValidationFailed("`top_p` must be > 0.0 and < 1.0")
    if p.typical_p is not None and not 0.0 < p.typical_p < 1.0:
        raise ValidationFailed("`typical_p` must be > 0.0 and < 1.0")
    if p.top_k is not None and p.top_k <= 0:
        raise ValidationFailed("`top_k` must be strictly positive")
    if p.max_new_tokens == 0:
        raise ValidationFailed("`max_new_tokens` must be strictly positive")
    stop = p.stop or []
    if len(stop) > cfg.max_stop_sequences:
        raise ValidationFailed(
            f"`stop` supports up to {cfg.max_stop_sequences} stop sequences. Given: {len(stop)}")
    if best_of > 1 and p.seed is not None:
        raise ValidationFailed("`seed` must not be set when `best_of` > 1")
    seed = p.seed if p.seed is not None else random.getrandbits(64)
    top_n = p.top_n_tokens or 0
    if top_n:
        if cfg.max_top_n_tokens == 0:
            raise ValidationFailed("`top_n_tokens` != 0 is not allowed for this endpoint")
        if top_n > cfg.max_top_n_tokens:
            raise ValidationFailed(
                f"`top_n_tokens` must be >= 0 and <= {cfg.max_top_n_tokens}. Given: {top_n}")
    if not inputs:
        raise ValidationFailed("`inputs` cannot be empty")
    max_in, max_total = cfg.max_input_tokens or 0, cfg.max_total_tokens or 0
    if p.truncate is not None and (p.truncate == 0 or p.truncate > max_in):
        raise ValidationFailed(
            f"`truncate` must be strictly positive and less than {max_in}. Given: {p.truncate}")
    ids = backend.tokenize(inputs)
    if p.truncate is not None:
        ids = ids[-p.truncate:]
    n_in = len(ids)
    mnt = p.max_new_tokens if p.max_new_tokens is not None else max(max_total - n_in, 1)
    if n_in + mnt > max_total:
        raise ValidationFailed(f"`inputs` tokens + `max_new_tokens` must be <= {max_total}. "
                               f"Given: {n_in} `inputs` tokens and {mnt} `max_new_tokens`")
    if n_in > max_in:
        raise ValidationFailed(f"`inputs` must have less than {max_in} tokens. Given: {n_in}")
    if p.grammar is not None:
        raise ValidationFailed("grammar is not supported")
    params = SamplingParams(
        max_new_tokens=mnt, do_sample=do_sample, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p,
        typical_p=p.typical_p, repetition_penalty=p.repetition_penalty,
        frequency_penalty=p.frequency_penalty, seed=seed, stop=list(stop), top_n_tokens=top_n,
        script=p._script)
    rft = p.return_full_text if p.return_full_text is not None else return_full_text_default
    return ValidRequest(inputs=inputs, input_ids=ids, params=params, details=bool(p.details),
                        decoder_input_details=bool(p.decoder_input_details), return_full_text=rft,
                        best_of=best_of, seed_given=p.seed is not None)
