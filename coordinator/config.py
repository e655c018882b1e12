"""The coordinator's configuration: one pydantic model, validated once, from a TOML file, the environment and flags.

Precedence (highest first): command-line flags, `SHARDNET_COORDINATOR_<FIELD>` environment variables, the
TOML file given with `--config`, the defaults below. Every field's `description` is its `--help` text.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from shardnet.config import ChainSettings, load_layered
from shardnet.config import field_help as shared_field_help

ENV_PREFIX = "SHARDNET_COORDINATOR_"


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


class CoordinatorConfig(ChainSettings):
    """Everything `coordinator run` needs. Field descriptions are the CLI help."""

    # -- chain (deployment, rpc_url, keystore, password_file, key_env, confirmations: shared)
    poll_interval_s: float = Field(0.2, gt=0, description="seconds between polls of the chain for new events")

    # -- HTTP
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8600, ge=0, le=65535, description="TCP port to listen on (0: any free port)")
    public_url: str | None = Field(
        None,
        description="the URL workers reach this coordinator at (push mode: the last worker sends each answer "
        "to PUBLIC_URL/v1/push/answers); default: http://HOST:PORT",
    )
    api_key: str | None = Field(
        None,
        description="if set, the OpenAI-compatible endpoints (which the coordinator pays for) require "
        "`Authorization: Bearer API_KEY`",
    )

    # -- state and model files
    db_url: str | None = Field(
        None,
        description="SQLAlchemy database URL (sqlite:///… or postgresql://…); default: SQLite in --data-dir",
    )
    data_dir: Path = Field(Path(".shardnet/coordinator"), description="folder for the SQLite database")
    store_dir: Path = Field(
        Path(".shardnet/store"),
        description="shard store folder; the coordinator needs only the manifest and tokenizer files, "
        "fetched from the workers when missing",
    )

    # -- the data plane
    step_timeout_s: float = Field(
        5.0, gt=0, description="a step to one worker that takes longer fails over to a replica"
    )
    coalesce_max_steps: int = Field(
        16,
        ge=1,
        le=256,
        description="most steps of concurrent jobs sent to one worker in one POST /v1/steps (docs/batching.md), "
        "so its batching window fills; 1 sends every step in its own request",
    )
    coalesce_in_flight: int = Field(
        1,
        ge=1,
        le=16,
        description="most step requests in flight to one worker; the steps that queue meanwhile leave together "
        "in the next (1 lets groups of sessions merge into ever fuller batches)",
    )
    coalesce_gather_ms: float = Field(
        200.0,
        ge=0,
        le=1000,
        description="how long an idle worker's queued steps may wait for its other live sessions' steps still on "
        "their way (in flight to the hop before), so concurrent jobs move in lock step and each forward batches all "
        "of them (docs/batching.md); 0 sends whatever queued at once",
    )
    max_positions_in_flight: int = Field(
        256,
        ge=1,
        description="most positions (prompt tokens of prefills, 1 per decode step) in flight to one worker; "
        "more steps queue in the coordinator, where no step timeout runs",
    )
    data_path: Literal["relay", "push"] = Field(
        "relay",
        description="how a token's data travels: push (the coordinator sends a step to the first worker, each "
        "worker forwards to the next, the last answers: each link crossed once) or relay (the coordinator "
        "sends every hop its input and reads its output: 2 link crossings per hop); failover and "
        "verification work in both; relay is the default: it coalesces concurrent jobs' steps per worker "
        "(docs/batching.md), push does not yet",
    )
    compact_answers: bool = Field(
        False,
        description="push mode, greedy jobs: the last worker answers each step with its top-16 logits and "
        "their ids (~150 bytes) instead of every logit (vocab x 4 bytes); the token is the same",
    )
    health_interval_s: float = Field(
        1.0, gt=0, description="seconds between /health probes of workers (down workers come back this way)"
    )
    load_penalty_s: float = Field(
        0.0, ge=0, description="routing: extra expected latency per session a worker already serves"
    )
    max_concurrent_jobs: int = Field(4, ge=1, description="jobs generated at the same time")
    settle_batch_s: float = Field(
        0.5,
        ge=0,
        description="jobs done within this many seconds of each other are settled in one settleJobs "
        "transaction (at most 16; less gas per job), and their verifiers paid in one payVerifiers; 0 sends each "
        "job's at once",
    )

    # -- verification
    check_share: float = Field(
        1.0,
        ge=0,
        le=1,
        description="share of settled jobs whose hops are judged after the fact by verifiers the registry draws "
        "(chosen from blockhash(closeBlock + 2), unknown to the workers when they commit; a cheat is caught in "
        "about this share of the jobs it corrupts); 0 disables",
    )
    hold_until_verified: bool = Field(
        False,
        description="OpenAI API: keep a stream's final event and a non-streaming answer until the job's after-the-"
        "fact check has finished (a cheat found: the stream gets a cheat_detected error event with the corrected "
        "text, a JSON answer the corrected text); a request's own hold_until_verified overrides it",
    )
    verify_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="share of (hop, step) pairs re-run on a replica and compared (0 disables)",
    )
    verify_rel_error: float = Field(
        1e-3, gt=0, description="hidden states: largest accepted relative error between two workers' outputs"
    )
    verify_top_k: int = Field(
        5, ge=1, description="last hop: the claimed top token must be within the replica's top-k"
    )

    # -- OpenAI-compatible API
    api_model_id: int | None = Field(
        None, description="on-chain model id the OpenAI API serves by default; default: the first registered"
    )
    api_max_tokens: int = Field(
        64,
        ge=1,
        description="max_tokens of an API request that gives none (capped by what the route can hold)",
    )
    no_api_key: bool = Field(
        False,
        description="serve the paid OpenAI API without a key on a non-loopback --host (anyone who reaches "
        "it spends this coordinator's ETH); without it such a start is refused",
    )
    api_max_running: int | None = Field(
        None, ge=1, description="OpenAI API requests paid and running at once; default: --max-concurrent-jobs"
    )
    api_queue_size: int = Field(
        32, ge=0, description="OpenAI API requests that may wait for capacity before paying (429 beyond)"
    )
    api_queue_wait_s: float = Field(
        30.0,
        ge=0,
        description="how long a waiting OpenAI API request waits for capacity (then 503, nothing paid)",
    )

    @model_validator(mode="after")
    def _key_beyond_loopback(self) -> CoordinatorConfig:
        if not self.api_key and not self.no_api_key and not _is_loopback(self.host):
            raise ValueError(
                f"--host {self.host} listens beyond this machine, and the OpenAI API spends the coordinator's ETH "
                "on every request: set --api-key KEY (clients send `Authorization: Bearer KEY`), or pass "
                "--no-api-key to serve it to anyone who can reach it"
            )
        return self

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.data_dir / 'coordinator.db').resolve()}"


def field_help() -> dict[str, str]:
    """Field name -> help text, for the CLI."""
    return shared_field_help(CoordinatorConfig)


def load_config(
    overrides: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> CoordinatorConfig:
    """Merge defaults < TOML file < environment < `overrides` (flags; None values are ignored) and validate."""
    return load_layered(
        CoordinatorConfig,
        role="coordinator",
        env_prefix=ENV_PREFIX,
        overrides=overrides,
        config_file=config_file,
        environ=environ,
    )
