"""TGI's native API: ``POST /generate``, ``POST /generate_stream`` and the compat ``POST /``.

``/`` answers a JSON list (``[{"generated_text": ...}]``) or, with ``"stream": true``, the same
SSE stream as ``/generate_stream``; its ``return_full_text`` defaults to true (TGI's
``compat_return_full_text`` for text-generation models), false on the other two routes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from fastapi import APIRouter, Request
from starlette.responses import Response

from harness.server.backends.base import StepOutput
from harness.server.generation import Collected, Service, Timing
from harness.server.httputil import check_auth, error_response, json_response, read_json, request_id
from harness.server.infer_errors import InferError
from harness.server.schemas import (
    CompatGenerateRequest,
    ErrorResponse,
    GenerateParameters,
    GenerateRequest,
    GenerateResponse,
    StreamResponse,
)
from harness.server.sse_response import (
    Chunk,
    SSEResponse,
    cancel_on_disconnect,
    data_event,
    dumps,
    encode_str,
    token_json,
)
from harness.server.stream_guard import guarded_stream
from harness.server.validation import ValidRequest, default_parameters

_ERRORS = {422: {"model": ErrorResponse, "description": "Input validation error"},
           424: {"model": ErrorResponse, "description": "Generation error"},
           429: {"model": ErrorResponse, "description": "Model is overloaded"},
           500: {"model": ErrorResponse, "description": "Incomplete generation"}}


def _body_doc(model: type) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _params(req: GenerateRequest) -> GenerateParameters:
    """TGI: ``default_parameters()`` (sampling) when the key is absent (or null)."""
    return req.parameters if req.parameters is not None else default_parameters()


def stream_header_list(svc: Service, inputs: str, rid: str) -> list[tuple[bytes, bytes]]:
    """A stream answer's own headers (after :data:`~harness.server.sse_response.SSE_HEADERS`)."""
    return [(b"x-compute-type", svc.cfg.compute_type.encode()), (b"x-compute-characters", str(len(inputs)).encode()),
            (b"x-accel-buffering", b"no"), (b"x-request-id", rid.encode())]


def stream_headers(svc: Service, inputs: str, rid: str) -> dict[str, str]:
    """:func:`stream_header_list` as the ``headers`` of an :class:`SSEResponse`."""
    return {k.decode(): v.decode() for k, v in stream_header_list(svc, inputs, rid)}


def native_events(svc: Service, req: GenerateRequest, timing: Timing,
                  return_full_text_default: bool) -> AsyncIterator[Chunk]:
    """The SSE body of ``/generate_stream``: token events, or one error event (:func:`guarded_stream`)."""

    def admit():
        return svc.admit(req.inputs, _params(req), stream=True, return_full_text_default=return_full_text_default,
                         timing=timing)

    async def body(valid) -> AsyncGenerator[Chunk, None]:
        index = 0
        async with aclosing(svc.steps(valid, timing)) as steps:
            async for out in steps:
                index += 1
                yield native_token_event(valid, index, out), index

    return guarded_stream(svc, admit, body, native_error_chunk)


def native_error_chunk(exc: InferError) -> Chunk:
    """The error event of a native stream refused or failed after its headers."""
    return data_event(dumps(exc.body())), 0


def native_token_event(valid: ValidRequest, index: int, out: StepOutput) -> bytes:
    """The ``data:`` event of token ``index`` (from 1) of a native stream (TGI's StreamResponse)."""
    top = f'"top_tokens":[{",".join(map(token_json, out.top_tokens))}],' if out.top_tokens else ""
    if out.finish_reason is None:
        return (f'data: {{"index":{index},"token":{token_json(out.token)},{top}'
                f'"generated_text":null,"details":null}}\n\n').encode()
    text = out.generated_text or ""
    if valid.return_full_text:
        text = valid.inputs + text
    det = "null"
    if valid.details:
        seed = "null" if out.seed is None else str(out.seed)
        det = (f'{{"finish_reason":"{out.finish_reason}","generated_tokens":{out.generated_tokens},'
               f'"seed":{seed},"input_length":{len(valid.input_ids)}}}')
    return (f'data: {{"index":{index},"token":{token_json(out.token)},{top}'
            f'"generated_text":{encode_str(text)},"details":{det}}}\n\n').encode()


def _details_dict(c: Collected, valid_seed: int | None, top_n: bool) -> dict:
    last = c.last
    assert last is not None
    d = {"finish_reason": last.finish_reason, "generated_tokens": last.generated_tokens,
         "seed": last.seed if last.seed is not None else valid_seed, "prefill": [],
         "tokens": [t.as_dict() for t in c.tokens]}
    if top_n:
        d["top_tokens"] = [[t.as_dict() for t in step] for step in c.top_tokens]
    return d


async def generate_object(svc: Service, request: Request, req: GenerateRequest,
                          return_full_text_default: bool) -> tuple[dict | None, dict[str, str], InferError | None]:
    """Run a non-stream generation (with best_of); returns (response object, headers, error)."""
    timing = Timing(time.monotonic_ns())
    rid = request_id(request)
    permits = []
    try:
        permits, valid = svc.admit(req.inputs, _params(req), stream=False,
                                   return_full_text_default=return_full_text_default, timing=timing)
        async with cancel_on_disconnect(request.receive) as state:
            if valid.best_of > 1:
                copies = []
                for i in range(valid.best_of):
                    v = valid if i == 0 else _reseeded(valid)
                    copies.append(svc.collect(v, Timing(timing.start_ns, timing.validated_ns), record=False))
                results = await asyncio.gather(*copies)
                results.sort(key=lambda c: -sum(t.logprob or 0.0 for t in c.tokens))
                best = results[0]
                timing = best.timing or timing
                svc.record_success(timing, best.last.generated_tokens if best.last else 0)
            else:
                best, results = await svc.collect(valid, timing), []
        if state.disconnected:
            svc.metrics.failure("dropped")
            return None, {}, None
    except InferError as exc:
        svc.metrics.failure(exc.metric)
        return None, {"x-request-id": rid}, exc
    finally:
        for permit in permits:
            permit.release()
    last = best.last
    assert last is not None
    text = (valid.inputs if valid.return_full_text else "") + (last.generated_text or "")
    obj: dict = {"generated_text": text}
    sampling_seed = valid.params.seed if valid.params.do_sample else None
    if valid.details or valid.decoder_input_details:
        det = _details_dict(best, sampling_seed, valid.params.top_n_tokens > 0)
        if results[1:]:
            seqs = []
            for c in results[1:]:
                s = _details_dict(c, sampling_seed, valid.params.top_n_tokens > 0)
                s["generated_text"] = (valid.inputs if valid.return_full_text else "") + (c.last.generated_text or "")
                seqs.append({"generated_text": s.pop("generated_text"), **s})
            det["best_of_sequences"] = seqs
        obj["details"] = det
    ms = timing.ms()
    n = max(last.generated_tokens, 1)
    headers = {"x-compute-type": svc.cfg.compute_type,
               "x-compute-time": f"{(time.monotonic_ns() - timing.start_ns) / 1e9:.4f}",
               "x-compute-characters": str(len(req.inputs)),
               "x-total-time": str(ms["total"]), "x-validation-time": str(ms["validation"]),
               "x-queue-time": str(ms["queue"]), "x-inference-time": str(ms["inference"]),
               "x-time-per-token": str(ms["inference"] // n),
               "x-prompt-tokens": str(len(valid.input_ids)),
               "x-generated-tokens": str(last.generated_tokens), "x-request-id": rid}
    return obj, headers, None


def _reseeded(valid):
    """A best_of copy: same request, its own random seed (TGI seeds each copy independently)."""
    import copy
    import random

    v = copy.copy(valid)
    v.params = copy.copy(valid.params)
    v.params.seed = random.getrandbits(64)
    return v


def build_router(svc: Service) -> APIRouter:
    router = APIRouter()
    cfg = svc.cfg

    def sse(req: GenerateRequest, request: Request, rft_default: bool) -> SSEResponse:
        timing = Timing(time.monotonic_ns())
        rid = request_id(request)
        return SSEResponse(native_events(svc, req, timing, rft_default),
                           stream_headers(svc, req.inputs, rid), keepalive_s=cfg.keepalive_s,
                           trace=svc.trace, request_id=rid)

    async def non_stream(request: Request, req: GenerateRequest, rft_default: bool, as_list: bool) -> Response:
        obj, headers, err = await generate_object(svc, request, req, rft_default)
        if err is not None:
            return error_response(err, headers)
        if obj is None:  # client went away
            return Response(status_code=499)
        return json_response([obj] if as_list else obj, headers=headers)

    @router.post("/generate", tags=["Text Generation Inference"], summary="Generate tokens",
                 response_model=GenerateResponse, responses=_ERRORS, openapi_extra=_body_doc(GenerateRequest))
    async def generate(request: Request) -> Response:
        svc.metrics.count_request()
        check_auth(request, cfg)
        req = await read_json(request, GenerateRequest, cfg)
        return await non_stream(request, req, False, False)

    @router.post("/generate_stream", tags=["Text Generation Inference"],
                 summary="Generate a stream of token events (SSE); errors arrive as an event in a 200",
                 responses={200: {"model": StreamResponse, "content": {"text/event-stream": {}}}, **_ERRORS},
                 openapi_extra=_body_doc(GenerateRequest))
    async def generate_stream(request: Request) -> Response:
        svc.metrics.count_request()
        check_auth(request, cfg)
        req = await read_json(request, GenerateRequest, cfg)
        return sse(req, request, False)

    @router.post("/", tags=["Text Generation Inference"],
                 summary="Compat route: JSON list, or SSE with \"stream\": true (what HF clients call)",
                 response_model=list[GenerateResponse], responses=_ERRORS,
                 openapi_extra=_body_doc(CompatGenerateRequest))
    async def compat_generate(request: Request) -> Response:
        svc.metrics.count_request()
        check_auth(request, cfg)
        req = await read_json(request, CompatGenerateRequest, cfg)
        if req.stream:
            return sse(req, request, True)
        return await non_stream(request, req, True, True)

    return router
