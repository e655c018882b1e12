"""The client library: pay for a job on chain, hand its prompt to a coordinator, get checked text back.

    client = ShardnetClient(Registry.from_deployment(account=me))
    outcome = client.submit("Hello", model="SmolLM2-135M-Instruct", max_tokens=32)
    print(outcome.text)          # keccak256(outcome.text) == the outputHash finalized on chain

The prompt never goes on chain, only its keccak256; the coordinator checks the prompt against it, and takes it
only signed by the job's client with the sampling parameters (`shardnet.job_auth`). The
output's keccak256 is checked against the `outputHash` the coordinator finalized on chain, so a
coordinator cannot serve one text and settle another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from eth_utils import keccak

from shardnet.chain.devnet import DEV_CHAIN_ID
from shardnet.chain.models import ModelLookupError, resolve_model
from shardnet.chain.registry import JobInfo, JobStatus, Registry
from shardnet.chain.tx import chain_id, rpc
from shardnet.errors import ShardnetError
from shardnet.http_json import HttpUnreachable, request_json
from shardnet.job_auth import AUTH_HEADER as AUTH_HEADER
from shardnet.job_auth import MAX_OUTPUT_READ_VALID_S as MAX_OUTPUT_READ_VALID_S
from shardnet.job_auth import OUTPUT_READ_VALID_S as OUTPUT_READ_VALID_S
from shardnet.job_auth import handover_body, sign_output_read, sign_prompt_handover
from shardnet.job_auth import output_read_message as output_read_message
from shardnet.job_auth import output_reader as output_reader

log = logging.getLogger(__name__)


class ClientError(ShardnetError):
    """A job could not be submitted, run or checked; the message says what to do."""


class OutputMismatch(ClientError):
    """The text a coordinator served does not hash to the outputHash on chain."""


@dataclass(frozen=True)
class JobOutcome:
    job_id: int
    text: str
    output_hash: bytes
    route: list[dict[str, Any]]
    commitments: list[dict[str, Any]] | None
    escrow_wei: int
    seconds: float


#: The most tokens a job may ask for (maxTokens is a uint32 on chain).
MAX_TOKENS_LIMIT = 2**32 - 1
WEI_PER_ETH = 10**18


def format_eth(wei: int) -> str:
    """`0.016632 ETH`, exact (in wei below 10**12 wei)."""
    if 0 < wei < 10**12:
        return f"{wei} wei"
    text = f"{Decimal(wei) / WEI_PER_ETH:f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + " ETH"


def check_max_tokens(max_tokens: int) -> int:
    """`max_tokens` if the chain can take it; else a ClientError in the user's terms."""
    if (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
    ):
        raise ClientError(
            f"--max-tokens must be a whole number from 1 to {MAX_TOKENS_LIMIT} (the most tokens "
            f"to generate), not {max_tokens}; nothing was paid"
        )
    return max_tokens


def _http(
    method: str,
    url: str,
    body: dict[str, Any] | bytes | None = None,
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    # answers are read through shardnet.wire.json_limits (bounded size and depth): a hostile coordinator
    # cannot crash the client
    try:
        return request_json(method, url, body, timeout=timeout, headers=headers)
    except HttpUnreachable as exc:
        raise ClientError(
            f"cannot reach the coordinator at {url}: {exc.reason}; check --coordinator"
        ) from exc


def _message(payload: Any) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return str(payload["error"].get("message"))
    return str(payload)


class ShardnetClient:
    """Submits and follows jobs as the registry's account."""

    def __init__(self, registry: Registry, *, coordinator_url: str | None = None) -> None:
        self.registry = registry
        self.coordinator_url = coordinator_url.rstrip("/") if coordinator_url else None
        self.coordinator_address: str | None = None  # set by find_coordinator: the address jobs name on chain

    def _need_account(self) -> None:
        if self.registry.account is None:
            raise ClientError("this needs your account: pass a key (--key-env VAR or --keystore FILE)")

    def claim(self) -> tuple[int, str]:
        """Withdraw the account's claimable balance (refunds, fees); returns (wei, tx hash)."""
        self._need_account()
        amount = self.registry.claimable(self.registry.account.address)  # type: ignore[union-attr]
        if amount == 0:
            raise ClientError("nothing to claim: refunds and payouts become claimable when jobs end")
        return amount, self.registry.claim().tx_hash

    # -- lookups
    def model_id(self, model: str | int) -> int:
        """A model's on-chain id from its id or its registered name (refused when several models share it)."""
        try:
            return resolve_model(self.registry, model).model_id
        except ModelLookupError as exc:
            raise ClientError(str(exc)) from exc

    def coordinators(self) -> dict[str, str]:
        """Endpoint -> address of every approved, active coordinator with an endpoint (newest approval first)."""
        events = self.registry.get_logs(
            self.registry.deploy_block, self.registry.block_number(), ["CoordinatorSet"]
        )
        found: dict[str, str] = {}
        for address in dict.fromkeys(str(e.args["coordinator"]) for e in reversed(events)):
            if self.registry.is_coordinator(address):
                endpoint = self.registry.coordinator_endpoint(address)
                if endpoint:
                    found.setdefault(endpoint.rstrip("/"), address)
        return found

    def find_coordinator(self) -> str:
        """The endpoint of an approved coordinator that answers `/health` now (checked before anything is paid),
        from `CoordinatorSet` events (newest first) and `coordinatorEndpoint`. Its address (the job names it on
        chain) is kept in `coordinator_address`."""
        known = self.coordinators()
        if self.coordinator_url:
            candidates = [self.coordinator_url.rstrip("/")]
        else:
            candidates = list(known)
            if not candidates:
                raise ClientError(
                    "no approved coordinator with an endpoint is registered; pass --coordinator URL"
                )
        problems = []
        for url in candidates:
            try:
                status, _ = _http("GET", f"{url}/health", timeout=5.0)
            except ClientError as exc:
                problems.append(f"{url}: {exc}")
                continue
            if status == 200:
                if url not in known:
                    problems.append(f"{url}: answers, but no approved coordinator on chain has this endpoint")
                    continue
                self.coordinator_address = known[url]
                return url
            problems.append(f"{url}: HTTP {status}")
        raise ClientError(
            "no coordinator answers, so nothing was paid: "
            + "; ".join(problems)
            + " (start one, or pass --coordinator URL of one that runs)"
        )

    # -- jobs
    def preflight(
        self, url: str, prompt: str, model_id: int, max_tokens: int, *, chat: bool
    ) -> dict[str, Any]:
        """Ask the coordinator whether this job can run (route, prompt length, max_tokens) before paying."""
        status, answer = _http(
            "POST",
            f"{url}/v1/jobs/preflight",
            {"model": model_id, "prompt": prompt, "max_tokens": max_tokens, "chat": chat},
        )
        if status == 200 and isinstance(answer, dict):
            return answer
        if status == 404:
            raise ClientError(
                f"the coordinator at {url} cannot check a job before payment (no /v1/jobs/preflight): "
                "nothing was paid; use a coordinator of this shardnet version"
            )
        raise ClientError(f"this job cannot run, so nothing was paid: {_message(answer)}")

    def check_registry_max_tokens(self, max_tokens: int) -> int:
        """`max_tokens` if the registry's maxJobTokens allows it; else a ClientError (nothing is paid)."""
        limit = self.registry.max_job_tokens()
        if max_tokens > limit:
            raise ClientError(
                f"--max-tokens {max_tokens} is more than this registry allows ({limit}, its maxJobTokens): "
                f"ask for {limit} or fewer; nothing was paid"
            )
        return max_tokens

    def pay(self, prompt: str, model_id: int, max_tokens: int, coordinator: str | None = None) -> int:
        """Submit a job for `coordinator` (default: the one `find_coordinator` chose) paying quote() into escrow;
        returns its id."""
        self._need_account()
        self.check_registry_max_tokens(max_tokens)
        coordinator = coordinator or self.coordinator_address
        if coordinator is None:
            self.find_coordinator()
            coordinator = self.coordinator_address
        quote = self.registry.quote(model_id, max_tokens)
        result = self.registry.submit_job(
            model_id, keccak(prompt.encode("utf-8")), max_tokens, str(coordinator), value=quote
        )
        return int(result.event("JobSubmitted").args["jobId"])

    def hand_over(self, url: str, job_id: int, prompt: str, sampling: dict[str, Any]) -> None:
        """Hand the prompt and `sampling` (temperature, top_p, seed, ignore_eos, chat) of job `job_id` to the
        coordinator at `url`, signed by the job's client (`shardnet.job_auth.sign_prompt_handover`)."""
        self._need_account()
        body = handover_body(prompt, **sampling)
        auth = {AUTH_HEADER: sign_prompt_handover(self.registry.account, job_id, body)}
        status, payload = _http("POST", f"{url}/v1/jobs/{job_id}/prompt", body, headers=auth)
        if status != 202:
            raise ClientError(
                f"the coordinator refused the prompt of job {job_id} (HTTP {status}): {_message(payload)}"
            )

    def upload_adapter(self, url: str, data: bytes) -> str:
        """Upload a LoRA adapter file to the coordinator; returns its CID (0x + keccak of the bytes), checked."""
        status, payload = _http("POST", f"{url}/v1/adapters", data, timeout=60.0)
        cid = "0x" + keccak(data).hex()
        if status != 200 or not isinstance(payload, dict) or payload.get("id") != cid:
            raise ClientError(f"the coordinator refused the adapter (HTTP {status}): {_message(payload)}")
        return cid

    def wait(
        self,
        url: str,
        job_id: int,
        *,
        timeout_s: float,
        progress: Callable[[str], None] | None = None,
        poll_s: float = 0.25,
    ) -> dict[str, Any]:
        """Poll the coordinator until the job is done; returns its final view (with the output: it signs as the client)."""
        deadline = time.monotonic() + timeout_s
        last = None
        auth = {AUTH_HEADER: sign_output_read(self.registry.account, job_id)} if self.registry.account else {}
        while True:
            status, view = _http("GET", f"{url}/v1/jobs/{job_id}", headers=auth)
            if status == 200 and isinstance(view, dict):
                if view["status"] != last and progress is not None:
                    progress(f"job {job_id}: {view['status']}")
                last = view["status"]
                if view.get("done"):
                    return view
            elif status != 404:
                raise ClientError(
                    f"the coordinator answered HTTP {status} for job {job_id}: {_message(view)}"
                )
            if time.monotonic() > deadline:
                raise ClientError(
                    f"job {job_id} was not finished after {timeout_s:.0f} s (last status {last}); "
                    f"`shardnet cancel {job_id}` refunds it once its deadline has passed"
                )
            time.sleep(poll_s)

    def check(self, job_id: int, view: dict[str, Any]) -> JobInfo:
        """Check a finished job's output against the chain; returns the chain's record."""
        job = self.registry.get_job(job_id)
        output_hash = self.registry.output_hash(job_id)
        if view["status"] != "finalized" or job.status != JobStatus.Settled or output_hash is None:
            raise ClientError(
                f"job {job_id} ended {view['status']} (chain: {job.status.name}): "
                f"{view.get('error') or 'no output'}; the escrow was refunded"
            )
        text = view.get("output")
        if not isinstance(text, str) or keccak(text.encode("utf-8")) != output_hash:
            raise OutputMismatch(
                f"job {job_id}: the coordinator's text does not hash to the outputHash 0x{output_hash.hex()} "
                "settled on chain; do not trust it and report the coordinator"
            )
        return job

    def submit(
        self,
        prompt: str,
        *,
        model: str | int,
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        chat: bool = False,
        timeout_s: float = 600.0,
        progress: Callable[[str], None] | None = None,
        confirm: Callable[[int, dict[str, Any]], bool] | None = None,
        adapter: bytes | None = None,
    ) -> JobOutcome:
        """Check, pay, hand over, wait, fetch and check: the whole client side of a job.

        Nothing is paid unless the coordinator's preflight accepts the job and `confirm(quote_wei, preflight)`
        (when given) returns True. `adapter` (a LoRA file as `shardnet finetune` saves it) is uploaded first and
        its CID signed into the prompt hand-over: the coordinator runs the job with exactly that adapter."""
        t0 = time.monotonic()
        say = progress or (lambda _m: None)
        check_max_tokens(max_tokens)
        self.check_registry_max_tokens(max_tokens)
        url = self.find_coordinator()
        model_id = self.model_id(model)
        sampling: dict[str, Any] = {"temperature": temperature, "top_p": top_p, "seed": seed, "chat": chat}
        if adapter is not None:
            sampling["adapter"] = self.upload_adapter(url, adapter)
            say(f"adapter {sampling['adapter']} uploaded to {url}")
        answer = self.preflight(url, prompt, model_id, max_tokens, chat=chat)
        quote = self.registry.quote(model_id, max_tokens)
        say(
            f"quote: {format_eth(quote)} into escrow for up to {max_tokens} tokens of {answer.get('model', model)} "
            f"(prompt {answer.get('prompt_tokens')} tokens; what is not used is refunded)"
        )
        if confirm is not None and not confirm(quote, answer):
            raise ClientError("not confirmed, so nothing was paid")
        job_id = self.pay(prompt, model_id, max_tokens)
        say(f"job {job_id}: paid into escrow, handing the prompt to {url}")
        self.hand_over(url, job_id, prompt, sampling)
        view = self.wait(url, job_id, timeout_s=timeout_s, progress=progress)
        job = self.check(job_id, view)
        output_hash = keccak(str(view["output"]).encode("utf-8"))
        say(f"job {job_id}: output checked against outputHash 0x{output_hash.hex()} on chain")
        return JobOutcome(
            job_id,
            view["output"],
            output_hash,
            view.get("route") or [],
            view.get("commitments"),
            job.escrow,
            time.monotonic() - t0,
        )

    def jobs(self, client: str | None = None) -> list[JobInfo]:
        """Jobs on chain (only `client`'s when given), oldest first; the events are read in capped block ranges."""
        events = self.registry.get_logs(
            self.registry.deploy_block, self.registry.block_number(), ["JobSubmitted"]
        )
        ids = [
            int(e.args["jobId"])
            for e in events
            if client is None or str(e.args["client"]).lower() == client.lower()
        ]
        return [self.registry.get_job(i) for i in ids]

    def open_jobs(self, client: str) -> list[JobInfo]:
        """`client`'s jobs whose escrow is still locked (open on chain)."""
        return [j for j in self.jobs(client) if j.status == JobStatus.Open]

    def cancel(self, job_id: int) -> str:
        """Cancel a job past its deadline (the escrow becomes claimable); returns the transaction hash."""
        self._need_account()
        job = self.registry.get_job(job_id)
        now = self._chain_time()
        open_job = job.status == JobStatus.Open
        if open_job and now <= job.deadline and chain_id(self.registry.w3) == DEV_CHAIN_ID:
            # a devnet's clock moves only with its blocks: mine one so the chain's clock catches up with the wall's
            rpc(self.registry.w3, "evm_mine", [])
            now = self._chain_time()
        if open_job and now <= job.deadline:
            when = datetime.fromtimestamp(job.deadline, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            raise ClientError(
                f"job {job_id} can be cancelled only after its deadline, {when} "
                f"({job.deadline - now + 1} s from the chain's clock, the time of its latest block, "
                "which moves only when a block is made); try again then"
            )
        return self.registry.cancel_job(job_id, job.record).tx_hash

    def _chain_time(self) -> int:
        return int(self.registry.w3.eth.get_block("latest")["timestamp"])
