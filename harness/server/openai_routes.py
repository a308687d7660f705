"""OpenAI-compatible routes: ``POST /v1/chat/completions`` and ``POST /v1/completions``
(``GET /v1/models`` lives in :mod:`harness.server.app`).

Mapping to TGI parameters (``router/src/server.rs``): ``temperature: 0`` -> greedy
(``do_sample`` false), any other value or none -> sampling; ``max_tokens`` (alias
``max_completion_tokens``) -> ``max_new_tokens``; ``presence_penalty`` -> ``repetition_penalty =
presence_penalty + 2``; ``top_logprobs`` -> ``top_n_tokens``; ``response_format`` -> grammar
(refused: not supported); ``tools``: see :mod:`harness.server.openai_extras` (422
``tool_error`` on backends without tool support); ``model`` other than
``tgi`` is echoed back (TGI treats it as an adapter id and falls back to the base model).

Streams end with ``data: [DONE]``. Chat chunks all carry ``role``; a special token gives
``content: ""``; the last token chunk carries ``finish_reason`` (EOS -> ``stop``, else
``length``/``stop_sequence``); ``stream_options.include_usage`` adds a chunk with ``choices: []``
and ``usage``. A failure inside a chat stream is ``{"error":{"message":..,"http_status_code":422}}``
then ``[DONE]`` (TGI >= 2.4.1). Completion chunks have ``finish_reason: ""`` until the last chunk of
each prompt, which has the raw reason and ``usage``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from harness.server.backends.base import StepOutput, TokenInfo
from harness.server.config import VERSION
from harness.server.generation import Service, Timing
from harness.server.httputil import check_auth, error_response, json_response, read_json, request_id
from harness.server.infer_errors import InferError, OpenAIRequestError, RequestRejected, TemplateFailed
from harness.server.native_routes import stream_headers
from harness.server.openai_extras import (
    ChatDeltas,
    chat_message,
    chat_script,
    completion_script,
    usage,
    with_tool_prompt,
)
from harness.server.schemas import (
    ChatCompletion,
    ChatRequest,
    Completion,
    CompletionRequest,
    ErrorResponse,
    GenerateParameters,
    Message,
)
from harness.server.sse_response import Chunk, SSEResponse, cancel_on_disconnect, dumps, encode_str
from harness.server.stream_guard import guarded_stream

FINGERPRINT = f"{VERSION}-native"
DONE = b"data: [DONE]\n\n"
_ERRORS = {422: {"model": ErrorResponse}, 424: {"model": ErrorResponse}, 429: {"model": ErrorResponse}}


def _openai_error(exc: InferError) -> Chunk:
    """The error event of an OpenAI stream refused after its headers (vLLM's shape)."""
    return f'data: {dumps({"error": {"message": exc.message, "http_status_code": 422}})}\n\n'.encode(), 0


def _body_doc(model: type) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _sampling(temperature: float | None) -> tuple[bool, float | None]:
    """TGI: temperature 0 -> greedy and no temperature; otherwise sampling."""
    if temperature == 0:
        return False, None
    return True, temperature


def _stop(stop: list[str] | str | None) -> list[str] | None:
    return [stop] if isinstance(stop, str) else stop


def chat_finish(reason: str | None) -> str | None:
    return "stop" if reason == "eos_token" else reason


def _logprob_entry(tok: TokenInfo, top: list[TokenInfo]) -> dict[str, Any]:
    return {"token": tok.text, "logprob": tok.logprob,
            "top_logprobs": [{"token": t.text, "logprob": t.logprob} for t in top]}


def text_message(m: Message) -> dict[str, Any]:
    """TGI's ``TextMessage``: content parts joined into one string (text as is, images as
    ``![](url)``), so every chat template sees string content."""
    d = m.model_dump(exclude_none=True)
    if isinstance(m.content, list):
        parts = []
        for part in m.content:
            if part.get("type") == "image_url":
                parts.append(f"![]({(part.get('image_url') or {}).get('url', '')})")
            else:
                parts.append(str(part.get("text", "")))
        d["content"] = "".join(parts)
    return d


def _model_name(svc: Service, model: str | None) -> str:
    return model if model and model != "tgi" else svc.cfg.model_id


async def _merge(iters: list[AsyncIterator[StepOutput]]) -> AsyncIterator[tuple[int, StepOutput]]:
    """Interleave several prompts' outputs as they come (one task per prompt)."""
    if len(iters) == 1:
        async for out in iters[0]:
            yield 0, out
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, it: AsyncIterator[StepOutput]) -> None:
        try:
            async for out in it:
                await queue.put((i, out, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            await queue.put((i, None, exc))
            return
        await queue.put((i, None, None))

    tasks = [asyncio.get_running_loop().create_task(pump(i, it)) for i, it in enumerate(iters)]
    try:
        left = len(iters)
        while left:
            i, out, exc = await queue.get()
            if exc is not None:
                raise exc
            if out is None:
                left -= 1
                continue
            yield i, out
    finally:
        for t in tasks:
            t.cancel()


def chat_parameters(svc: Service, req: ChatRequest) -> GenerateParameters:
    """The TGI parameters of a chat request (module docstring); raises ToolError & co."""
    script = chat_script(req, svc.backend)  # tools (ToolError) and simulation overrides
    do_sample, temperature = _sampling(req.temperature)
    p = GenerateParameters.model_construct(
        max_new_tokens=req.max_tokens if req.max_tokens is not None else req.max_completion_tokens,
        do_sample=do_sample, temperature=temperature, top_p=req.top_p, seed=req.seed,
        stop=_stop(req.stop), frequency_penalty=req.frequency_penalty,
        repetition_penalty=None if req.presence_penalty is None else req.presence_penalty + 2.0,
        top_n_tokens=req.top_logprobs if req.logprobs else None, details=True,
        grammar=req.response_format, best_of=None, top_k=None, typical_p=None, truncate=None,
        return_full_text=False, decoder_input_details=False, watermark=False, adapter_id=None)
    p._script = script
    return p


def chat_prompt(svc: Service, req: ChatRequest) -> str:
    """The prompt text of a chat request (its chat template); raises TemplateFailed."""
    try:
        return svc.backend.apply_chat_template(
            with_tool_prompt([text_message(m) for m in req.messages], req, svc.backend))
    except ValueError as exc:
        raise TemplateFailed(str(exc)) from None


class ChatStreamFormat:
    """The ``data:`` events of one chat stream: :meth:`token` per token, :meth:`after_last` (the
    usage chunk when asked for) after the last one."""

    __slots__ = ("req", "model", "head", "deltas")

    def __init__(self, svc: Service, req: ChatRequest) -> None:
        self.req = req
        self.model = _model_name(svc, req.model)
        self.head = (f'{{"object":"chat.completion.chunk","id":"","created":{int(time.time())},'
                     f'"model":{encode_str(self.model)},"system_fingerprint":"{FINGERPRINT}","choices":[{{"index":0,'
                     f'"delta":')
        self.deltas = ChatDeltas()

    def token(self, out: StepOutput) -> bytes:
        lp = "null"
        if self.req.logprobs:
            lp = dumps({"content": [_logprob_entry(out.token, out.top_tokens)]})
        fr = self.deltas.finish(out.finish_reason)
        return (f'data: {self.head}{self.deltas.delta(out)},"logprobs":{lp},'
                f'"finish_reason":{"null" if fr is None else encode_str(fr)}}}],"usage":null}}\n\n').encode()

    def after_last(self, out: StepOutput, input_len: int) -> bytes | None:
        req = self.req
        if not (req.stream_options and req.stream_options.include_usage):
            return None
        u = usage(input_len, out.generated_tokens, out.cached_tokens, out.reasoning_tokens)
        return (f'data: {{"object":"chat.completion.chunk","id":"","created":{int(time.time())},'
                f'"model":{encode_str(self.model)},"system_fingerprint":"{FINGERPRINT}","choices":[],'
                f'"usage":{dumps(u)}}}\n\n').encode()


def openai_error_chunk(exc: InferError) -> Chunk:
    """The error event of an OpenAI stream refused after its headers (vLLM's shape)."""
    return _openai_error(exc)


def completion_parameters(svc: Service, req: CompletionRequest) -> tuple[list[str], GenerateParameters]:
    """The prompts and TGI parameters of a completions request; raises OpenAIRequestError & co."""
    cfg = svc.cfg
    if req.suffix is not None:
        raise OpenAIRequestError("suffix not supported",
                                 "Suffix is not supported and can be achieved by preprocessing the prompt.")
    prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    if not prompts:
        raise RequestRejected(422, "Failed to deserialize the JSON body into the target type: "
                                   "prompt: expected a non-empty array")
    if len(prompts) > cfg.max_client_batch_size:
        raise OpenAIRequestError("batch size exceeded", "Number of prompts exceeds the maximum allowed "
                                 f"batch size of {cfg.max_client_batch_size}")
    do_sample, temperature = _sampling(req.temperature)
    p = GenerateParameters.model_construct(
        max_new_tokens=req.max_tokens, do_sample=do_sample, temperature=temperature, top_p=req.top_p,
        seed=req.seed, stop=_stop(req.stop), frequency_penalty=req.frequency_penalty,
        repetition_penalty=req.repetition_penalty, details=True, grammar=None, best_of=None, top_k=None,
        typical_p=None, truncate=None, return_full_text=False, decoder_input_details=False,
        watermark=False, adapter_id=None, top_n_tokens=None)
    p._script = completion_script(req)
    return prompts, p


def completion_event(i: int, out: StepOutput, input_len: int, created: int, model: str) -> bytes:
    """The ``data:`` event of one token of prompt ``i`` of a completions stream (``model``: JSON text)."""
    text = "" if out.token.special else out.token.text
    if out.finish_reason is None:
        return (f'data: {{"object":"text_completion","id":"","created":{created},"choices":[{{"index":{i},'
                f'"text":{encode_str(text)},"logprobs":null,"finish_reason":""}}],"model":{model},'
                f'"system_fingerprint":"{FINGERPRINT}"}}\n\n').encode()
    u = dumps(usage(input_len, out.generated_tokens, out.cached_tokens, out.reasoning_tokens))
    return (f'data: {{"object":"text_completion","id":"","created":{created},"choices":[{{"index":{i},'
            f'"text":{encode_str(text)},"logprobs":null,"finish_reason":"{out.finish_reason}"}}],'
            f'"model":{model},"system_fingerprint":"{FINGERPRINT}","usage":{u}}}\n\n').encode()


def build_router(svc: Service) -> APIRouter:
    router = APIRouter()
    cfg = svc.cfg

    def admit_all(prompts: list[str], p: GenerateParameters, timing: Timing, stream: bool):
        permits, valids = [], []
        try:
            for prompt in prompts:
                svc.metrics.count_request()  # TGI counts OpenAI requests twice (outer + inner)
                got, valid = svc.admit(prompt, p, stream=stream, return_full_text_default=False, timing=timing)
                permits += got
                valids.append(valid)
        except BaseException:
            for permit in permits:
                permit.release()
            raise
        return permits, valids

    # -- chat ----------------------------------------------------------------------------
    def chat_events(req: ChatRequest, prompt: str, p: GenerateParameters, timing: Timing) -> AsyncIterator[Chunk]:
        fmt = ChatStreamFormat(svc, req)

        async def body(admitted) -> AsyncGenerator[Chunk, None]:
            (valid,) = admitted
            index = 0
            async with aclosing(svc.steps(valid, timing)) as steps:
                async for out in steps:
                    index += 1
                    yield fmt.token(out), index
                    if out.finish_reason is not None:
                        extra = fmt.after_last(out, len(valid.input_ids))
                        if extra is not None:
                            yield extra, 0

        return guarded_stream(svc, lambda: admit_all([prompt], p, timing, True), body, _openai_error, (DONE, 0))

    @router.post("/v1/chat/completions", tags=["OpenAI"], summary="OpenAI chat completions (SSE with stream)",
                 response_model=ChatCompletion, responses=_ERRORS, openapi_extra=_body_doc(ChatRequest))
    async def chat_completions(request: Request) -> Response:
        svc.metrics.count_request()
        check_auth(request, cfg)
        req = await read_json(request, ChatRequest, cfg)
        timing = Timing(time.monotonic_ns())
        try:
            p = chat_parameters(svc, req)
            prompt = chat_prompt(svc, req)
        except InferError as exc:
            svc.metrics.failure(exc.metric)
            return error_response(exc)
        rid = request_id(request)
        if req.stream:
            return SSEResponse(chat_events(req, prompt, p, timing), stream_headers(svc, prompt, rid),
                               keepalive_s=cfg.keepalive_s, trace=svc.trace, request_id=rid)
        result = await _run_non_stream(request, [prompt], p, timing)
        if isinstance(result, Response):
            return result
        (valid, c), = result
        last = c.last
        n_in = len(valid.input_ids)
        message, finish = chat_message(c.outputs)
        logprobs = None
        if req.logprobs:
            tops = c.top_tokens if c.top_tokens else [[] for _ in c.tokens]
            logprobs = {"content": [_logprob_entry(t, top) for t, top in zip(c.tokens, tops, strict=False)]}
        return json_response({
            "object": "chat.completion", "id": "", "created": int(time.time()),
            "model": _model_name(svc, req.model), "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}],
            "usage": usage(n_in, last.generated_tokens, last.cached_tokens, last.reasoning_tokens)},
            headers={"x-request-id": rid})

    async def _run_non_stream(request: Request, prompts: list[str], p: GenerateParameters, timing: Timing):
        permits: list = []
        try:
            permits, valids = admit_all(prompts, p, timing, False)
            async with cancel_on_disconnect(request.receive) as state:
                results = await asyncio.gather(*(svc.collect(v, Timing(timing.start_ns, timing.validated_ns))
                                                 for v in valids))
            if state.disconnected:
                svc.metrics.failure("dropped")
                return Response(status_code=499)
        except InferError as exc:
            svc.metrics.failure(exc.metric)
            return error_response(exc)
        finally:
            for permit in permits:
                permit.release()
        return list(zip(valids, results, strict=True))

    # -- completions -----------------------------------------------------------------------
    def completion_events(req: CompletionRequest, prompts: list[str], p: GenerateParameters,
                          timing: Timing) -> AsyncIterator[Chunk]:
        model = encode_str(_model_name(svc, req.model))
        created = int(time.time())

        async def body(valids) -> AsyncGenerator[Chunk, None]:
            timings = [Timing(timing.start_ns, timing.validated_ns) for _ in valids]
            index = 0
            merged = _merge([svc.steps(v, t) for v, t in zip(valids, timings, strict=True)])
            async with aclosing(merged) as outs:
                async for i, out in outs:
                    index += 1
                    yield completion_event(i, out, len(valids[i].input_ids), created, model), index

        return guarded_stream(svc, lambda: admit_all(prompts, p, timing, True), body, _openai_error, (DONE, 0))

    @router.post("/v1/completions", tags=["OpenAI"], summary="OpenAI completions (SSE with stream)",
                 response_model=Completion, responses=_ERRORS, openapi_extra=_body_doc(CompletionRequest))
    async def completions(request: Request) -> Response:
        svc.metrics.count_request()
        check_auth(request, cfg)
        req = await read_json(request, CompletionRequest, cfg)
        timing = Timing(time.monotonic_ns())
        try:
            prompts, p = completion_parameters(svc, req)
        except InferError as exc:
            svc.metrics.failure(exc.metric)
            return error_response(exc)
        rid = request_id(request)
        if req.stream:
            return SSEResponse(completion_events(req, prompts, p, timing),
                               stream_headers(svc, "".join(prompts), rid), keepalive_s=cfg.keepalive_s,
                               trace=svc.trace, request_id=rid)
        result = await _run_non_stream(request, prompts, p, timing)
        if isinstance(result, Response):
            return result
        choices, n_in, n_out, cached, reasoning = [], 0, 0, None, None
        for i, (valid, c) in enumerate(result):
            choices.append({"index": i, "text": c.last.generated_text or "", "logprobs": None,
                            "finish_reason": chat_finish(c.last.finish_reason)})
            n_in += len(valid.input_ids)
            n_out += c.last.generated_tokens
            if c.last.cached_tokens is not None:
                cached = (cached or 0) + c.last.cached_tokens
            if c.last.reasoning_tokens is not None:
                reasoning = (reasoning or 0) + c.last.reasoning_tokens
        return json_response({
            "object": "text_completion", "id": "", "created": int(time.time()),
            "model": _model_name(svc, req.model), "system_fingerprint": FINGERPRINT, "choices": choices,
            "usage": usage(n_in, n_out, cached, reasoning)},
            headers={"x-request-id": rid})

    return router
