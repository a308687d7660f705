"""TGI's error kinds: HTTP status, ``error_type``, message text and ``tgi_request_failure`` label.

Every error the server returns is the JSON body ``{"error": <message>, "error_type": <type>}``
(on native stream routes: one SSE event with that body inside a 200 response).
Texts follow TGI ``router/src/infer/mod.rs`` and ``router/src/server.rs``.
"""

from __future__ import annotations


class InferError(Exception):
    """Base: ``status`` for non-stream answers, ``error_type`` for the body, ``metric`` for the counter."""

    status: int = 500
    error_type: str = "unknown"
    metric: str | None = None  #: ``err`` label of tgi_request_failure; None: not counted (axum rejection)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.error_type}


class Overloaded(InferError):
    status, error_type, metric = 429, "overloaded", "overloaded"

    def __init__(self) -> None:
        super().__init__("Model is overloaded")


class ValidationFailed(InferError):
    """TGI ``ValidationError``: 422, text prefixed with ``Input validation error: ``."""

    status, error_type, metric = 422, "validation", "validation"

    def __init__(self, detail: str) -> None:
        super().__init__(f"Input validation error: {detail}")
        self.detail = detail


class GenerationFailed(InferError):
    status, error_type, metric = 424, "generation", "generation"

    def __init__(self, detail: str) -> None:
        super().__init__(f"Request failed during generation: {detail}")


class IncompleteGeneration(InferError):
    status, error_type, metric = 500, "incomplete_generation", "incomplete"

    def __init__(self) -> None:
        super().__init__("Incomplete generation")


class IncompleteGenerationStream(InferError):
    status, error_type, metric = 500, "incomplete_generation_stream", "incomplete"

    def __init__(self) -> None:
        super().__init__("Incomplete generation stream")


class TemplateFailed(InferError):
    status, error_type, metric = 422, "template_error", "template"

    def __init__(self, detail: str) -> None:
        super().__init__(f"Template error: {detail}")


class RequestRejected(InferError):
    """A request TGI's extractors (axum) would reject before the handler: bad JSON, wrong types,
    too large. TGI answers text/plain there; this server keeps its one JSON error shape
    (``error_type`` ``validation``) with TGI's texts. Not counted in tgi_request_failure."""

    error_type = "validation"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class OpenAIRequestError(InferError):
    """OpenAI-route specific 422s (``suffix not supported``, ``batch size exceeded``)."""

    status, metric = 422, "validation"

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class ToolError(InferError):
    """TGI ``InferError::ToolError``: 422 ``tool_error``, text ``Tool error: ...``."""

    status, error_type, metric = 422, "tool_error", "validation"

    def __init__(self, detail: str) -> None:
        super().__init__(f"Tool error: {detail}")
