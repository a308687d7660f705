"""The FastAPI application: routes, lifespan (backend start/stop, trace), error handlers.

Routing and the OpenAPI document come from FastAPI; generation answers are written by hand
(:mod:`harness.server.sse_response`) to keep per-token cost low. Every error is TGI's JSON
``{"error", "error_type"}``, never a traceback (401 has an empty body, as in TGI).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from harness.server.admission import Admission
from harness.server.backends.base import REQUEST_ARRIVAL_NS, Backend, GenerationError
from harness.server.config import ROUTER, VERSION, ServerConfig
from harness.server.generation import Service
from harness.server.httputil import Unauthorized, error_response, json_response
from harness.server.infer_errors import InferError, RequestRejected
from harness.server.lean import LeanPath
from harness.server.prometheus import Metrics
from harness.server.schemas import (
    ChatRequest,
    CompatGenerateRequest,
    CompletionRequest,
    GenerateRequest,
    Info,
    ModelList,
)
from harness.server.sse_response import RAW_SEND
from harness.server.trace import TokenTrace

log = logging.getLogger("harness.server")


def info_dict(svc: Service) -> dict:
    cfg = svc.cfg
    return {"model_id": cfg.model_id, "model_sha": None, "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": cfg.max_concurrent_requests, "max_best_of": cfg.max_best_of,
            "max_stop_sequences": cfg.max_stop_sequences, "max_input_tokens": cfg.max_input_tokens,
            "max_total_tokens": cfg.max_total_tokens, "validation_workers": 2,
            "max_client_batch_size": cfg.max_client_batch_size, "router": ROUTER, "version": VERSION,
            "sha": None, "docker_label": None}


class HarnessApp(FastAPI):
    """FastAPI that also puts the ASGI server's ``send`` in the scope (:data:`RAW_SEND`), so
    streaming responses can send body chunks without the middleware ``send`` wrappers, and that
    first offers generation requests to the lean path (:mod:`harness.server.lean`: overloaded
    answers, simulated token streams) when ``lean`` is set."""

    lean: LeanPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await super().__call__(scope, receive, self._one_line_startup_failure(send))
            return
        REQUEST_ARRIVAL_NS.set(time.monotonic_ns())  # per request: each runs in its own task
        lean = self.lean
        if lean is not None and scope["type"] == "http" and lean.wants(scope):
            replayed = await lean.handle(scope, receive, send)
            if replayed is None:
                return
            receive = replayed
        scope[RAW_SEND] = send
        await super().__call__(scope, receive, send)

    def _one_line_startup_failure(self, send: Send) -> Send:
        """Starlette reports a failed startup with the whole traceback, which uvicorn logs; a model
        that cannot load is a user error, so its one-line reason replaces the traceback."""

        async def lifespan_send(message: dict) -> None:
            reason = getattr(self.state, "startup_error", None)
            if message["type"] == "lifespan.startup.failed" and reason:
                message = {**message, "message": reason}
            await send(message)

        return lifespan_send


#: pre-routing fast paths on (``HARNESS_LEAN``, default 1; 0 sends every request through FastAPI,
#: e.g. for A/B measurements)
LEAN = os.environ.get("HARNESS_LEAN", "1") != "0"

#: seconds between full collections (``HARNESS_GC_INTERVAL_S``; 0: CPython's automatic policy)
GC_INTERVAL_S = float(os.environ.get("HARNESS_GC_INTERVAL_S", "30"))


def settle_gc() -> None:
    """Collector policy once the server is ready. Every collection stops the event loop, so it
    shows as token jitter; with 512 streams ~70k container objects are alive (coroutine frames
    of the ASGI stack), and CPython's automatic policy then ran a generation-1 pass (~6 ms) about
    once a second and a full pass (~70 ms) every few seconds: ~2 % of the time stalled.

    Here: ``gc.freeze()`` moves everything alive after startup (modules, the app, a model) into
    a permanent generation no collection walks; only generation 0 (threshold 700, as CPython)
    is collected automatically (sub-ms passes: cycles that die young); everything older is
    collected by :func:`full_collections` every :data:`GC_INTERVAL_S` seconds (the cycles
    uvicorn and FastAPI leave per request, ~15 objects, wait for that pass)."""
    gc.collect()
    gc.freeze()
    if GC_INTERVAL_S > 0:
        gc.set_threshold(700, 1 << 30, 1 << 30)


async def full_collections() -> None:
    """Run ``gc.collect()`` every :data:`GC_INTERVAL_S` seconds (see :func:`settle_gc`)."""
    while True:
        await asyncio.sleep(GC_INTERVAL_S)
        gc.collect()


def create_app(backend: Backend, cfg: ServerConfig) -> FastAPI:
    """The server for ``backend``; token limits are resolved from it at startup."""
    admission = Admission(cfg.max_concurrent_requests)
    svc = Service(backend, cfg, Metrics(1, 1, backend.stats), admission)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await backend.start()
        except (ValueError, OSError, GenerationError) as exc:  # ModelLoadError is a ValueError
            app.state.startup_error = f"cannot start the model {cfg.model_id or ''}: {exc}".replace("  ", " ")
            raise
        if not cfg.model_id or cfg.model_id in ("simulated",):
            cfg.model_id = backend.model_id or cfg.model_id
        cfg.resolve_limits(backend.max_position_embeddings)
        svc.metrics = Metrics(cfg.max_input_tokens or 1, cfg.max_total_tokens or 1, backend.stats)
        if cfg.trace_file:
            svc.trace = TokenTrace(cfg.trace_file)
            svc.trace.start()
        settle_gc()
        collector = asyncio.get_running_loop().create_task(full_collections()) if GC_INTERVAL_S > 0 else None
        log.info("ready: model=%s max_input_tokens=%s max_total_tokens=%s max_concurrent_requests=%s",
                 cfg.model_id, cfg.max_input_tokens, cfg.max_total_tokens, cfg.max_concurrent_requests)
        try:
            yield
        finally:
            if collector is not None:
                collector.cancel()
            admission.close()
            if svc.trace is not None:
                await svc.trace.close()
            await backend.shutdown()

    app = HarnessApp(title="stream-harness reference server", version=VERSION, lifespan=lifespan,
                  docs_url="/docs", openapi_url="/api-doc/openapi.json",
                  description="TGI wire protocol (native + OpenAI-compatible routes) over a "
                              "transformers or simulated backend.")
    app.state.service = svc
    if LEAN:
        app.lean = LeanPath(svc)

    @app.exception_handler(InferError)
    async def _infer_error(request: Request, exc: InferError) -> Response:
        return error_response(exc)

    @app.exception_handler(Unauthorized)
    async def _unauthorized(request: Request, exc: Unauthorized) -> Response:
        return Response(status_code=401)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return error_response(RequestRejected(422, f"Failed to deserialize the JSON body into the target type: {exc.errors()[0].get('msg')}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return Response(status_code=exc.status_code)  # 404 / 405: empty bodies, as TGI

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return json_response({"error": "Internal server error", "error_type": "internal"}, 500)

    from harness.server.native_routes import build_router as native_router
    from harness.server.openai_routes import build_router as openai_router

    app.include_router(native_router(svc))
    app.include_router(openai_router(svc))

    async def health(request: Request) -> Response:
        if backend.healthy():
            return Response(status_code=200)
        return json_response({"error": "unhealthy", "error_type": "healthcheck"}, 503)

    for path in ("/health", "/", "/ping"):
        app.add_api_route(path, health, methods=["GET"], tags=["Text Generation Inference"],
                          summary="Health: 200 empty when ready, 503 JSON otherwise",
                          include_in_schema=path == "/health")

    @app.get("/info", response_model=Info, tags=["Text Generation Inference"], summary="Server limits")
    async def info() -> Response:
        return json_response(info_dict(svc))

    @app.get("/metrics", tags=["Text Generation Inference"], summary="Prometheus metrics (tgi_* names)",
             response_class=PlainTextResponse)
    async def metrics() -> Response:
        return PlainTextResponse(svc.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", response_model=ModelList, tags=["OpenAI"], summary="The served model")
    async def models() -> Response:
        mid = cfg.model_id
        return json_response({"object": "list", "data": [{"id": mid, "object": "model", "created": 0,
                                                          "owned_by": mid}]})

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        _, defs = models_json_schema(
            [(m, "validation") for m in (GenerateRequest, CompatGenerateRequest, ChatRequest, CompletionRequest)],
            ref_template="#/components/schemas/{model}")
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
