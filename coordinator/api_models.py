"""One pydantic model per HTTP request body of the coordinator, validated before anything else runs.

    body = CompletionRequest.model_validate(await json_body(request))   # raises ValidationError
    return validation_error(exc)                                         # 400 in OpenAI's error shape

Types are strict (`max_tokens: "abc"`, `[1]`, `1e11` or `true` are refused, not coerced), ranges are those the
contract takes (`max_tokens` is a uint32, at least 1: 0 is an error, not "use the default"), text must be
encodable as UTF-8 (a lone surrogate cannot be hashed or tokenized), and fields that would change the answer
but are not supported (`n: 2`, `stop`, `logprobs`, penalties, tools, ...) are refused by name instead of
silently ignored. Harmless fields OpenAI clients send (`user`, `stream_options`) are accepted and ignored.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator

from coordinator.sampling import SamplingParams
from shardnet.job_auth import handover_body

#: The largest maxTokens the contract takes (uint32).
MAX_TOKENS_LIMIT = 2**32 - 1

MaxTokens = Annotated[StrictInt, Field(ge=1, le=MAX_TOKENS_LIMIT)]
Seed = Annotated[StrictInt, Field(ge=0, lt=2**63)]
Temperature = Annotated[float, Field(ge=0.0, le=10.0, strict=True)]
TopP = Annotated[float, Field(gt=0.0, le=1.0, strict=True)]
ModelName = Annotated[str, Field(min_length=1, max_length=256)] | StrictInt


def _utf8(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("the text is not valid Unicode (it holds a lone surrogate such as \\ud800)") from exc
    return text


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Sampled(_Body):
    """Sampling fields every generation body shares."""

    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: Seed | None = None
    ignore_eos: StrictBool = False

    def sampling(self, *, chat: bool = False) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature or 0.0,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=self.seed,
            ignore_eos=self.ignore_eos,
            chat=chat,
        )


class _OpenAIRequest(_Sampled):
    """What completions and chat completions share; unsupported options may only take their neutral value."""

    model: ModelName | None = None
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    stream: StrictBool = False
    n: Literal[1] = Field(1, description="one choice per request: n > 1 is not supported")
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: None = Field(
        None, description="stop sequences are not supported (the model stops at EOS or max_tokens)"
    )
    logit_bias: None = None
    hold_until_verified: StrictBool | None = Field(
        None,
        description="shardnet: keep the stream's final event (or the whole answer) until the job's after-the-fact "
        "check has finished; a cheat found then is reported with the corrected text. Default: the coordinator's "
        "--hold-until-verified",
    )
    # accepted and ignored: they do not change the tokens
    user: str | None = None
    stream_options: dict[str, Any] | None = None

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float | None) -> float | None:
        if value not in (None, 0):
            raise ValueError("penalties are not supported by this server; leave them out or at 0")
        return value

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens


class CompletionRequest(_OpenAIRequest):
    """`POST /v1/completions`."""

    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    best_of: Literal[1] | None = None
    echo: Literal[False] | None = None
    logprobs: None = None
    suffix: None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str:
        return _utf8(value[0] if isinstance(value, list) else value)

    @property
    def text(self) -> str:
        assert isinstance(self.prompt, str)
        return self.prompt


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _text(cls, value: str) -> str:
        return _utf8(value)


class ChatCompletionRequest(_OpenAIRequest):
    """`POST /v1/chat/completions`."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    logprobs: Literal[False] | None = None
    top_logprobs: None = None
    tools: None = None
    tool_choice: None = None
    response_format: None = None

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]


class PromptHandOver(_Sampled):
    """`POST /v1/jobs/{id}/prompt`: the exact prompt whose keccak256 the job carries, and how to sample."""

    model_config = ConfigDict(
        extra="ignore", strict=True, frozen=True
    )  # the client may sign more (Protocol v2)

    prompt: str
    chat: StrictBool = False
    adapter: str | None = None  # "0x<keccak of a LoRA file uploaded by POST /v1/adapters>"

    @field_validator("prompt")
    @classmethod
    def _text(cls, value: str) -> str:
        return _utf8(value)

    @field_validator("adapter")
    @classmethod
    def _cid(cls, value: str | None) -> str | None:
        if value is not None and re.fullmatch(r"0x[0-9a-fA-F]{64}", value) is None:
            raise ValueError("adapter must be 0x and 64 hex digits (the id POST /v1/adapters answered)")
        return None if value is None else value.lower()

    def signed_body(self) -> dict[str, Any]:
        """What the job's client must have signed (`shardnet.job_auth.handover_digest`): prompt and sampling."""
        return handover_body(
            self.prompt,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            ignore_eos=self.ignore_eos,
            chat=self.chat,
            adapter=self.adapter,
        )


class PreflightRequest(_Body):
    """`POST /v1/jobs/preflight`."""

    model: ModelName
    prompt: str
    max_tokens: MaxTokens
    chat: StrictBool = False

    @field_validator("prompt")
    @classmethod
    def _text(cls, value: str) -> str:
        return _utf8(value)


#: A job id in a path: what the contract numbers jobs with (uint64 in practice, 1-based)
MAX_JOB_ID = 2**63 - 1


def parse_job_id(text: str) -> int | None:
    """The job id of a URL path segment, or None when it is not a whole number in [1, 2**63)."""
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    job_id = int(text)
    return job_id if 1 <= job_id <= MAX_JOB_ID else None


def validation_error(
    exc: ValidationError, status: int = 400, codes: dict[str, str] | None = None
) -> web.Response:
    """The first validation failure as OpenAI's error: {"error": {"message", "type", "param", "code"}}."""
    first = exc.errors(include_url=False)[0]
    param = ".".join(
        str(p) for p in first["loc"] if not str(p).startswith(("function-after", "str", "list["))
    )
    kind = first["type"]
    if kind == "extra_forbidden":
        message, code = f"{param!r} is not supported by this server; remove it", "unsupported_parameter"
    elif kind in ("literal_error", "none_required"):
        given = json.dumps(first.get("input"), default=str)[:60]
        message = f"{param}={given} is not supported by this server ({first['msg'].lower()}); remove it or use the default"
        code = "unsupported_value"
    elif kind == "missing":
        message, code = f"{param!r} is required", "missing_parameter"
    else:
        message, code = f"{param or 'body'}: {first['msg']}", "invalid_value"
    code = (codes or {}).get(param, code)
    return web.json_response(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param or None,
                "code": code,
            }
        },
        status=status,
    )
