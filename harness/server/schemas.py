"""Request and response bodies (pydantic), with TGI's field names and meanings.

Requests are parsed with these models in strict mode (like serde: ``"5"`` is not an integer),
unknown keys are ignored and ``null`` is accepted for every optional field. Range rules are NOT
here: they live in :mod:`harness.server.validation` so that they answer with TGI's texts in TGI's
order. Response models exist for the OpenAPI document (``/docs``, ``/api-doc/openapi.json``);
the hot paths write JSON directly.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

_REQ = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)  # NaN/Infinity: 422, as TGI rejects them
U32 = 2**32 - 1
U64 = 2**64 - 1


class GrammarType(BaseModel):
    model_config = _REQ
    type: Literal["json", "json_object", "regex", "json_schema"] = Field(description="Grammar kind")
    value: Any = Field(description="JSON schema or regex")


class GenerateParameters(BaseModel):
    """TGI ``GenerateParameters``. When the ``parameters`` key is absent TGI samples (``do_sample``
    true); when present, omitted fields take their defaults (``do_sample`` false)."""

    model_config = _REQ
    best_of: int | None = Field(None, ge=0, description="Generate best_of sequences and return the one "
                                "with the highest log probability (non-streaming only).", examples=[1])
    decoder_input_details: bool | None = Field(None, description="Return the prefill (prompt) tokens; "
                                               "not supported when streaming.")
    details: bool | None = Field(None, description="Return generation details (finish reason, tokens, seed).")
    do_sample: bool | None = Field(None, description="Activate logits sampling.")
    frequency_penalty: float | None = Field(None, description="Penalty in [-2, 2] on token frequency.",
                                            examples=[0.1])
    grammar: GrammarType | None = Field(None, description="Constrained decoding (not supported here: "
                                        "answers a validation error).")
    max_new_tokens: int | None = Field(None, ge=0, le=U32, description="Maximum number of generated "
                                       "tokens; null: max_total_tokens - input length.", examples=[20])
    repetition_penalty: float | None = Field(None, description="Repetition penalty (1.0 = none), > 0.",
                                             examples=[1.03])
    return_full_text: bool | None = Field(None, description="Prepend the prompt to the generated text.")
    seed: int | None = Field(None, ge=0, le=U64, description="Random sampling seed.")
    stop: list[str] | None = Field(None, description="Stop generating when one of these appears "
                                   "(at most --max-stop-sequences).", examples=[["photographer"]])
    temperature: float | None = Field(None, description="Logits temperature, > 0.", examples=[0.5])
    top_k: int | None = Field(None, description="Keep the k most likely tokens, > 0.", examples=[10])
    top_n_tokens: int | None = Field(None, ge=0, le=U32, description="Return the n most likely tokens "
                                     "at each step (<= --max-top-n-tokens).", examples=[5])
    top_p: float | None = Field(None, description="Nucleus sampling, 0 < p < 1.", examples=[0.95])
    truncate: int | None = Field(None, ge=0, description="Keep only the last `truncate` input tokens.")
    typical_p: float | None = Field(None, description="Typical decoding mass, 0 < p < 1.", examples=[0.95])
    watermark: bool | None = Field(None, description="Watermarking (accepted, ignored).")
    adapter_id: str | None = Field(None, description="LoRA adapter id (unknown ids fall back to the base model).")
    #: set by the OpenAI routes (tools, simulation overrides), never read from a body
    _script: Any = PrivateAttr(None)


class GenerateRequest(BaseModel):
    """Body of ``POST /generate`` and ``POST /generate_stream``."""

    model_config = _REQ
    inputs: str = Field(description="The prompt.", examples=["My name is Olivier and I"])
    parameters: GenerateParameters | None = Field(None, description="Generation parameters.")


class CompatGenerateRequest(GenerateRequest):
    """Body of ``POST /``: the native request plus ``stream``."""

    stream: bool | None = Field(False, description="Answer with SSE events instead of a JSON list.")


class Token(BaseModel):
    id: int = Field(description="Token id")
    text: str = Field(description="Token text (incremental detokenization)")
    logprob: float | None = Field(description="Log probability")
    special: bool = Field(description="Special token (e.g. EOS)")


class PrefillToken(BaseModel):
    id: int
    text: str
    logprob: float | None


class BestOfSequence(BaseModel):
    generated_text: str
    finish_reason: Literal["length", "eos_token", "stop_sequence"]
    generated_tokens: int
    seed: int | None
    prefill: list[PrefillToken]
    tokens: list[Token]
    top_tokens: list[list[Token]] | None = None


class Details(BaseModel):
    finish_reason: Literal["length", "eos_token", "stop_sequence"]
    generated_tokens: int
    seed: int | None = Field(description="Seed used when sampling, else null")
    prefill: list[PrefillToken]
    tokens: list[Token]
    top_tokens: list[list[Token]] | None = Field(None, description="Present when top_n_tokens > 0")
    best_of_sequences: list[BestOfSequence] | None = Field(None, description="Present when best_of > 1")


class GenerateResponse(BaseModel):
    """``POST /generate``; ``POST /`` wraps it in a list."""

    generated_text: str
    details: Details | None = Field(None, description="Present when parameters.details is true")


class StreamDetails(BaseModel):
    finish_reason: Literal["length", "eos_token", "stop_sequence"]
    generated_tokens: int
    seed: int | None
    input_length: int


class StreamResponse(BaseModel):
    """One SSE event of ``/generate_stream`` (``data: <json>\\n\\n``)."""

    index: int = Field(description="Token index, from 1")
    token: Token
    top_tokens: list[Token] | None = Field(None, description="Present only when top_n_tokens > 0")
    generated_text: str | None = Field(description="Full text, last event only")
    details: StreamDetails | None = Field(description="Last event only, when details is true")


class ErrorResponse(BaseModel):
    error: str
    error_type: str = Field(description="overloaded | validation | generation | incomplete_generation | ...")


class Info(BaseModel):
    model_id: str
    model_sha: str | None
    model_pipeline_tag: str | None
    max_concurrent_requests: int
    max_best_of: int
    max_stop_sequences: int
    max_input_tokens: int
    max_total_tokens: int
    validation_workers: int
    max_client_batch_size: int
    router: str
    version: str
    sha: str | None
    docker_label: str | None


# -- OpenAI-compatible ------------------------------------------------------------------------

class StreamOptions(BaseModel):
    model_config = _REQ
    include_usage: bool | None = Field(None, description="Send a final chunk with usage")


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class FunctionDefinition(BaseModel):
    """OpenAI ``tools[].function`` (TGI also accepts ``arguments`` for ``parameters``)."""

    model_config = _REQ
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$", description="Function name (OpenAI's rule: "
                      "letters, digits, _ and -, at most 64)")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="JSON schema of the arguments object")
    arguments: dict[str, Any] | None = Field(None, description="TGI's name for `parameters`")
    strict: bool | None = None


class Tool(BaseModel):
    model_config = _REQ
    type: Literal["function"] = Field(description="Only functions are supported")
    function: FunctionDefinition


class FunctionName(BaseModel):
    model_config = _REQ
    name: str


class ToolChoiceFunction(BaseModel):
    """``{"type": "function", "function": {"name": ...}}``: call that function."""

    model_config = _REQ
    type: Literal["function"]
    function: FunctionName


class SimulateOptions(BaseModel):
    """Per-request script for ``--model simulated`` (other backends ignore it); unset fields take
    the ``--sim-*`` defaults."""

    model_config = _REQ
    reasoning_tokens: int | None = Field(None, ge=0, le=U32, description="Reasoning tokens before the answer")
    output_tokens: int | None = Field(None, ge=0, le=U32, description="Answer tokens incl. EOS (0: no natural end)")
    tool_calls: int | None = Field(None, ge=1, le=1024, description="Tool calls when tools are used")
    tool_call_fragments: int | None = Field(None, ge=1, le=U32, description="Argument fragments per call")


class ChatRequest(BaseModel):
    """Body of ``POST /v1/chat/completions``."""

    model_config = _REQ
    messages: list[Message] = Field(description="Conversation; the chat template turns it into the prompt")
    model: str | None = Field(None, description="'tgi' or absent: the served model; other values are echoed")
    max_tokens: int | None = Field(None, ge=0, le=U32)
    max_completion_tokens: int | None = Field(None, ge=0, le=U32)
    temperature: float | None = Field(None, description="0 means greedy")
    top_p: float | None = None
    seed: int | None = Field(None, ge=0, le=U64)
    stop: list[str] | str | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = Field(None, description="Mapped to repetition_penalty = value + 2")
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=U32)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    logit_bias: Any = None
    tools: list[Tool] | None = Field(None, min_length=1, description="Functions the model may call "
                                     "(simulated backend only; real models: 422 tool_error)")
    tool_choice: str | ToolChoiceFunction | None = Field(None, description="auto (default) | none | "
                                                        "required | a function name | {type, function: {name}}")
    tool_prompt: str | None = Field(None, description="Text appended with the tools to the last message")
    response_format: GrammarType | None = Field(None, description="Not supported: 422 validation")
    chat_template_kwargs: dict[str, Any] | None = Field(None, description="vLLM/SGLang: "
                                                        "`enable_thinking: false` turns reasoning off")
    simulate: SimulateOptions | None = Field(None, description="Simulated backend: per-request script")


class CompletionRequest(BaseModel):
    """Body of ``POST /v1/completions``."""

    model_config = _REQ
    prompt: str | list[str] = Field(description="A prompt or up to --max-client-batch-size prompts")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=0, le=U32)
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = Field(None, ge=0, le=U64)
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: list[str] | str | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    suffix: str | None = Field(None, description="Not supported: 422")
    simulate: SimulateOptions | None = Field(None, description="Simulated backend: per-request script")


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(description="Prompt tokens whose KV came from the prefix cache")


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = Field(description="Completion tokens that were reasoning")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = Field(None, description="When a prefix cache is on")
    completion_tokens_details: CompletionTokensDetails | None = Field(None, description="When the model reasons")


class FunctionCallOut(BaseModel):
    name: str
    arguments: str = Field(description="JSON text")


class ToolCallOut(BaseModel):
    id: str
    type: str = "function"
    function: FunctionCallOut


class ChatMessageOut(BaseModel):
    role: str
    content: str | None = Field(description="null when the message is tool calls")
    reasoning_content: str | None = Field(None, description="Present when the model reasoned")
    tool_calls: list[ToolCallOut] | None = Field(None, description="Present when the model called tools")


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: Any = None
    finish_reason: str


class ChatCompletion(BaseModel):
    object: str = "chat.completion"
    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: Any = None
    finish_reason: str


class Completion(BaseModel):
    object: str = "text_completion"
    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]
