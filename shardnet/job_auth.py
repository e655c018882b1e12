"""What a job's client signs (EIP-191) so that only it reads the job's output and hands over its prompt.

Both travel in the `X-Shardnet-Auth` header as `"<expires_at>:<0x signature>"`, and a coordinator refuses a header
that has expired or that is valid for longer than an hour from now:

    GET  /v1/jobs/{id}         sign_output_read(account, id)         output_read_message(id, expires_at)
    POST /v1/jobs/{id}/prompt  sign_prompt_handover(account, id, b)  prompt_handover_message(id, handover_digest(b),
                                                                      expires_at), b = handover_body(prompt, ...)

`handover_digest` is keccak256 of the canonical JSON of the prompt and every sampling parameter (the values the
coordinator samples with: an absent temperature is 0.0, an absent top_p 1.0), so the parameters are bound to what
the client signed: a body changed after signing recovers another address, which is not the job's client.
"""

from __future__ import annotations

import json
import time
from typing import Any

from eth_utils import keccak

#: Header carrying `"<expires_at>:<0x signature>"` (see the module's docstring).
AUTH_HEADER = "X-Shardnet-Auth"
#: How long a signed read is valid by default, and the longest validity a coordinator accepts.
OUTPUT_READ_VALID_S = 300
MAX_OUTPUT_READ_VALID_S = 3600
#: The same for a signed prompt hand-over.
HANDOVER_VALID_S = 300
MAX_HANDOVER_VALID_S = 3600


def output_read_message(job_id: int, expires_at: int) -> str:
    """The text a client signs (EIP-191) to read its job's output from a coordinator until `expires_at`."""
    return f"shardnet: read the output of job {job_id} until {expires_at}"


def handover_body(
    prompt: str,
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    ignore_eos: bool = False,
    chat: bool = False,
    adapter: str | None = None,
) -> dict[str, Any]:
    """The JSON body of `POST /v1/jobs/{id}/prompt` with every sampling parameter at the value it samples with;
    `adapter` (the CID of a LoRA adapter uploaded to the coordinator) only when the job runs with one."""
    body: dict[str, Any] = {
        "prompt": prompt,
        "temperature": float(temperature or 0.0),
        "top_p": 1.0 if top_p is None else float(top_p),
        "seed": seed,
        "ignore_eos": bool(ignore_eos),
        "chat": bool(chat),
    }
    if adapter is not None:
        body["adapter"] = adapter.lower()
    return body


def handover_digest(body: dict[str, Any]) -> bytes:
    """keccak256 of the canonical JSON (sorted keys, no spaces, non-ASCII as \\uXXXX) of `handover_body(...)`."""
    canonical = handover_body(
        body["prompt"],
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        seed=body.get("seed"),
        ignore_eos=body.get("ignore_eos", False),
        chat=body.get("chat", False),
        adapter=body.get("adapter"),
    )
    return keccak(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode("ascii"))


def prompt_handover_message(job_id: int, digest: bytes, expires_at: int) -> str:
    """The text a client signs (EIP-191) to hand over the prompt and sampling parameters of `digest` for its job."""
    return (
        f"shardnet: hand over the prompt of job {job_id} with the prompt and sampling parameters of keccak256 "
        f"0x{digest.hex()} until {expires_at}"
    )


def _sign(account: Any, message: str, expires_at: int) -> str:
    from eth_account.messages import encode_defunct

    signed = account.sign_message(encode_defunct(text=message))
    return f"{expires_at}:0x{bytes(signed.signature).hex()}"


def _expiry(valid_s: int, now: float | None) -> int:
    return int(time.time() if now is None else now) + int(valid_s)


def sign_output_read(
    account: Any, job_id: int, *, valid_s: int = OUTPUT_READ_VALID_S, now: float | None = None
) -> str:
    """The `X-Shardnet-Auth` value for `account` reading job `job_id` for the next `valid_s` seconds."""
    expires_at = _expiry(valid_s, now)
    return _sign(account, output_read_message(job_id, expires_at), expires_at)


def sign_prompt_handover(
    account: Any,
    job_id: int,
    body: dict[str, Any],
    *,
    valid_s: int = HANDOVER_VALID_S,
    now: float | None = None,
) -> str:
    """The `X-Shardnet-Auth` value for `account` handing over `body` (prompt and sampling) for job `job_id`."""
    expires_at = _expiry(valid_s, now)
    return _sign(account, prompt_handover_message(job_id, handover_digest(body), expires_at), expires_at)


def _signer(header: str | None, message: Any, max_valid_s: int, now: float | None) -> str | None:
    """The address (lowercase) that signed `message(expires_at)` in `header`, or None when the header is missing,
    malformed, expired, or valid for longer than `max_valid_s` from `now`."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    if not header or len(header) > 200:
        return None
    expires_text, _, signature = header.partition(":")
    if not expires_text.isascii() or not expires_text.isdigit() or len(expires_text) > 12:
        return None
    expires_at, current = int(expires_text), time.time() if now is None else now
    if not current <= expires_at <= current + max_valid_s:
        return None
    try:
        signer = Account.recover_message(encode_defunct(text=message(expires_at)), signature=signature)
    except Exception:  # noqa: BLE001 - a malformed signature simply signs nothing
        return None
    return str(signer).lower()


def output_reader(header: str | None, job_id: int, *, now: float | None = None) -> str | None:
    """The address (lowercase) that signed `header` to read job `job_id`, or None when the header is
    missing, malformed, expired, or valid for longer than `MAX_OUTPUT_READ_VALID_S` from `now`."""
    return _signer(header, lambda t: output_read_message(job_id, t), MAX_OUTPUT_READ_VALID_S, now)


def prompt_handover_signer(
    header: str | None, job_id: int, body: dict[str, Any], *, now: float | None = None
) -> str | None:
    """The address (lowercase) whose signature in `header` hands over exactly `body` for job `job_id`, or None when
    the header is missing, malformed, expired, or valid for longer than `MAX_HANDOVER_VALID_S` from `now`. A body
    other than the one signed recovers another address."""
    digest = handover_digest(body)
    return _signer(header, lambda t: prompt_handover_message(job_id, digest, t), MAX_HANDOVER_VALID_S, now)


def body_digest(body: dict[str, Any]) -> bytes:
    """keccak256 of the canonical JSON (sorted keys, no spaces, ASCII) of a request body."""
    return keccak(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii"))


def training_message(job_id: int, action: str, digest: bytes, expires_at: int) -> str:
    """The text a client signs (EIP-191) to ask a coordinator to `action` ("route" or "settle") its fine-tuning job
    with the request body of keccak256 `digest` (POST /v1/train/jobs/{id}/{action}, coordinator/training_api.py)."""
    return (
        f"shardnet: {action} the fine-tuning of job {job_id} with the body of keccak256 0x{digest.hex()} "
        f"until {expires_at}"
    )


def sign_training(
    account: Any,
    job_id: int,
    action: str,
    body: dict[str, Any],
    *,
    valid_s: int = HANDOVER_VALID_S,
    now: float | None = None,
) -> str:
    """The `X-Shardnet-Auth` value for `account` asking to `action` its fine-tuning job `job_id` with `body`."""
    expires_at = _expiry(valid_s, now)
    return _sign(account, training_message(job_id, action, body_digest(body), expires_at), expires_at)


def training_signer(
    header: str | None, job_id: int, action: str, body: dict[str, Any], *, now: float | None = None
) -> str | None:
    """The address (lowercase) whose signature in `header` asks to `action` fine-tuning job `job_id` with exactly
    `body`, or None when missing, malformed, expired, or valid for longer than `MAX_HANDOVER_VALID_S`."""
    digest = body_digest(body)
    return _signer(header, lambda t: training_message(job_id, action, digest, t), MAX_HANDOVER_VALID_S, now)
