"""What the after-the-fact check of a settled hop reads off the job and the network (`coordinator.job_checks`):
whether the hop can be judged from what was relayed, whether its signed root is that of what it relayed, the
tokens its last hop made the client see, the accused's dtype, and whether the job is among those drawn."""

from __future__ import annotations

import aiohttp
from eth_utils import keccak

from coordinator.hops import JobHops
from shardnet.verify.tokens import ShownTokens
from shardnet.wire.commitment import merkle_root
from shardnet.wire.json_limits import loads_limited, read_answer_limited


async def worker_dtype(endpoint: str | None, timeout_s: float = 5.0) -> str | None:
    """The dtype a worker's /health reports, or None when it cannot be read (the accused's answer is read no
    further than 64 KiB: an endless one costs nothing more)."""
    if not endpoint:
        return None
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
            http.get(endpoint.rstrip("/") + "/health") as resp,
        ):
            data = loads_limited(await read_answer_limited(resp, 64 * 1024), max_bytes=64 * 1024, max_depth=4)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    dtype = data.get("dtype") if isinstance(data, dict) else None
    return dtype if isinstance(dtype, str) else None


async def relayed_root_mismatch(job_hops: JobHops, hop_index: int) -> bool:
    """True when the hop's signed commitment covers as many steps as were relayed but not their leaves: it committed
    to something other than what it received and sent (its settlement is refused)."""
    signed = job_hops.commitments.get(hop_index)
    if signed is None or len(job_hops.relayed.get(hop_index, [])) != signed.steps:
        return False
    work = await job_hops.step_work(hop_index)
    if not work:
        return False
    return merkle_root([w.leaf() for w in work]) != signed.root


def shown_tokens(job_hops: JobHops, hop_index: int) -> ShownTokens | None:
    """The tokens a last hop of the finished run made the client see, with how they were drawn (None for
    another hop, or a last hop that also served an earlier run: its steps are not one token each)."""
    last_layer = max(span.end for _, span in job_hops.hops)
    tokens = job_hops.tokens_of(hop_index, last_layer)
    if tokens is None:
        return None
    p = job_hops.sampling
    seed = p.get("seed")
    return ShownTokens(
        tokens,
        _number(p.get("temperature"), 0.0),
        _number(p.get("top_p"), 1.0),
        seed if isinstance(seed, int) else None,
    )


def unjudgeable(job_hops: JobHops, hop_index: int) -> str | None:
    """Why hop `hop_index` cannot be judged from what was relayed (None: it can). A hop must have handed over its
    signed commitment, every step it signed must have been relayed, and all of them must belong to ONE session:
    steps of several sessions (a failover or re-run that came back to the same hop) each ran on their own cache,
    which one pass cannot replay, and judging them as one sequence could find an honest node guilty."""
    signed = job_hops.commitments.get(hop_index)
    relayed = len(job_hops.relayed.get(hop_index, []))
    if signed is None:
        return "no signed commitment was handed over"
    if not 0 < relayed == signed.steps:
        return f"{relayed} steps relayed, {signed.steps} signed"
    sessions = job_hops.sessions.get(hop_index, 0)
    if sessions != 1:
        return f"its steps belong to {sessions} sessions"
    return None


def _number(value: object, default: float) -> float:
    return float(value) if isinstance(value, int | float) else default


def job_drawn(randomness: bytes, job_id: int, share: float) -> bool:
    """Whether a settled job is checked: keccak(blockhash(closeBlock + 2) || jobId) below `share` of 2**256 (the
    randomness the registry draws verifiers from: unknown when the work was committed)."""
    if share >= 1.0:
        return True
    word = int.from_bytes(keccak(bytes(randomness) + job_id.to_bytes(32, "big")), "big")
    return word < int(share * 2**256)
