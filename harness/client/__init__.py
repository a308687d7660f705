"""Streaming clients: one SSE timing loop, one module per wire protocol.

>>> client = make_client("tgi", "http://127.0.0.1:3000")       # doctest: +SKIP
>>> rec = client.stream("Hello")                               # doctest: +SKIP

``make_client`` returns a :class:`~harness.client.tgi.TgiClient` or an
:class:`~harness.client.openai.OpenAIClient`; both fill a :class:`~harness.records.RequestRecord`
and never raise for request failures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from harness.client.base import REQUEST_ID_HEADER, RetryPolicy, StreamClient, Timeouts, new_request_id
from harness.client.openai import OpenAIClient
from harness.client.tgi import TgiClient

#: the wire protocols, by name: the one list that ``make_client``, ``harness run --protocol``, Locust's
#: ``--protocol`` and the scenarios use. Add one with :func:`register_protocol`.
PROTOCOLS: dict[str, type[StreamClient]] = {"tgi": TgiClient, "openai": OpenAIClient}

__all__ = ["PROTOCOLS", "REQUEST_ID_HEADER", "OpenAIClient", "RetryPolicy", "StreamClient", "TgiClient", "Timeouts",
           "make_client", "new_request_id", "register_protocol"]


def register_protocol(name: str, cls: type[StreamClient]) -> type[StreamClient]:
    """Add a wire protocol (the public extension point): ``cls`` subclasses :class:`StreamClient`
    (its ``protocol``, ``default_endpoint``, ``build_body`` and ``read_stream``); ValueError when ``name`` is taken."""
    if name in PROTOCOLS:
        raise ValueError(f"protocol {name!r} already exists")
    if not (isinstance(cls, type) and issubclass(cls, StreamClient)):
        raise ValueError(f"protocol {name!r}: {cls!r} is not a StreamClient subclass")
    PROTOCOLS[name] = cls
    return cls


def make_client(protocol: str = "tgi", base_url: str = "http://127.0.0.1:3000", endpoint: str | None = None,
                api_key: str | None = None, model_name: str | None = None, timeouts: Timeouts | None = None,
                retry: RetryPolicy | None = None, max_new_tokens: int | None = None,
                extra_body: dict | None = None,
                retokenize: Callable[[str], Sequence[int]] | None = None,
                request_id_header: str | None = REQUEST_ID_HEADER) -> StreamClient:
    """A stream client for ``protocol`` (a name of :data:`PROTOCOLS`) talking to ``base_url``.

    ``endpoint`` defaults to ``/generate_stream`` (tgi) or ``/v1/chat/completions`` (openai);
    ``/`` (TGI compat route, adds ``"stream": true``) and ``/v1/completions`` also work.
    ``max_new_tokens`` is the default output budget for prompts without one; ``extra_body`` is
    merged into every request body (e.g. ``{"ignore_eos": true}`` for vLLM, or
    ``{"parameters": {...}}`` for TGI); ``retokenize`` (text -> ids) fills
    ``output_tokens_retokenized``. ``request_id_header`` names the header that carries each
    request's UUID (``None`` or ``""``: send none). Raises ValueError for an unknown protocol or a bad URL.
    """
    try:
        cls = PROTOCOLS[protocol]
    except KeyError:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}") from None
    return cls(base_url, endpoint=endpoint, api_key=api_key, model_name=model_name, timeouts=timeouts,
               retry=retry, max_new_tokens=max_new_tokens, extra_body=extra_body, retokenize=retokenize,
               request_id_header=request_id_header)
