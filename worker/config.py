"""The worker's configuration: one pydantic model, validated once, from a TOML file, the environment and flags.

Precedence (highest first): command-line flags, `SHARDNET_WORKER_<FIELD>` environment variables, the
TOML file given with `--config`, the defaults below. Every field carries its help text in `description`;
the CLI builds its `--help` from them, so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from shardnet.config import ChainSettings, load_layered
from shardnet.config import field_help as shared_field_help
from shardnet.devices import DEVICE_CHOICES, DeviceError, check_device_spec
from shardnet.span import LayerSpan

ENV_PREFIX = "SHARDNET_WORKER_"


class WorkerConfig(ChainSettings):
    """Everything `worker run` needs. Field descriptions are the CLI help."""

    # -- chain (deployment, rpc_url, keystore, password_file, key_env, poll_interval_s, confirmations: shared)
    stake_wei: int | None = Field(
        None, ge=0, description="stake to deposit when registering, in wei; default: the registry's minStake"
    )

    # -- model and shard
    model: str | None = Field(
        None, description="model to serve: its on-chain id (a number) or its registered name"
    )
    layers: str | None = Field(
        None,
        description="layers to serve, START:END (END exclusive); default: the span that most raises the "
        "weakest coverage of the model among live assignments on chain",
    )
    num_layers_per_worker: int | None = Field(
        None,
        ge=1,
        description="span length to pick when --layers is not given; default: a third of the model",
    )
    store_dir: Path = Field(
        Path(".shardnet/store"), description="shard store folder (files by CID); fetched files are kept here"
    )
    peers: list[str] = Field(
        default_factory=list,
        description="where to fetch missing shard files from, tried in order, comma separated: peer URLs "
        "(any worker: http://host:port) or store folders; default: none (the store must hold them)",
    )
    keyholder: str | None = Field(
        None,
        description="for a private model: the owner's keyholder URL (`shardnet keyholder run`) that wraps the "
        "file keys to this node once its shard is announced",
    )
    device: str = Field(
        "auto",
        description=f"where the block computes and its KV caches live: {DEVICE_CHOICES} (auto: the first GPU "
        "when torch sees one, else the CPU); hidden states travel the same either way (docs/gpu.md)",
    )
    dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        None,
        description="dtype of the loaded weights; default: float32 on the CPU, on a GPU bfloat16 (float16 "
        "where the GPU lacks bfloat16), or float32 when the model's manifest (worker_dtypes) allows no half "
        "precision; a dtype the manifest does not allow is refused",
    )
    threads: int = Field(1, ge=1, description="torch threads for the model's compute")

    # -- HTTP
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8700, ge=1, le=65535, description="TCP port to listen on")
    public_url: str | None = Field(
        None,
        description="URL other machines reach this worker at (registered on chain); default: http://HOST:PORT",
    )
    db_url: str | None = Field(
        None, description="SQLAlchemy database URL for the worker's state; default: SQLite file in --data-dir"
    )
    data_dir: Path = Field(Path(".shardnet/worker"), description="folder for the worker's SQLite database")

    # -- limits
    max_sessions: int = Field(
        16, ge=1, description="sessions held at once; when full the least recently used idle one is evicted"
    )
    max_sessions_per_coordinator: int = Field(
        16, ge=1, description="sessions one coordinator may hold at once (429 beyond)"
    )
    max_length: int = Field(2048, ge=1, description="most token positions one session may cache")
    max_cache_mb: float | None = Field(
        None,
        gt=0,
        description="memory for all sessions' KV caches and kept outputs, in MiB (503 beyond); default: 1024 "
        "on the CPU, on a GPU gpu_memory_fraction of the device memory free once the weights are loaded",
    )
    gpu_memory_fraction: float = Field(
        0.8,
        gt=0,
        le=1,
        description="on a GPU without max_cache_mb: the share of its free memory (after loading the weights) "
        "that sessions' KV caches may take; the rest is left for activations of the forward passes",
    )
    session_timeout_s: float = Field(300.0, gt=0, description="a session idle this long is closed")
    batch_window_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="milliseconds a decode step waits for other sessions' steps to run with it as one "
        "batched forward (docs/batching.md); 0 batches only steps that queue behind a running one",
    )
    max_batch: int = Field(
        16,
        ge=1,
        le=1024,
        description="most sessions' decode steps in one batched forward; 1 turns batching off",
    )
    reservation_timeout_s: float = Field(
        30.0, gt=0, description="a session that reserved memory at open and sent no step this long is closed"
    )
    max_body_mb: float = Field(64.0, gt=0, description="largest request body accepted, in MiB (413 beyond)")
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="seconds a request body may take to arrive (408 beyond: slow senders hold nothing)",
    )
    header_timeout_s: float = Field(
        15.0,
        gt=0,
        description="seconds a connection may stay open without sending a whole request head (it is closed)",
    )
    max_connections_per_ip: int = Field(
        64, ge=1, description="open connections one peer IP address may hold (429 and closed beyond)"
    )
    drain_grace_s: float = Field(30.0, ge=0, description="on SIGTERM, seconds to let open sessions finish")
    step_forward_timeout_s: float = Field(
        60.0, gt=0, description="timeout of a push-mode forward to the next worker"
    )
    settle_window_s: float = Field(
        60.0,
        ge=0,
        description="seconds after handing a job's signed commitment to its coordinator before this "
        "worker posts it on chain itself (postCommitment) if the job was not settled with it; 0 posts at once",
    )
    perturb_outputs: float = Field(
        0.0,
        ge=0,
        description="FOR TESTING THE VERIFIER ONLY: add Gaussian noise of this scale (times each output's "
        "standard deviation) to every output; an honest worker keeps 0",
    )

    @field_validator("layers")
    @classmethod
    def _check_layers(cls, value: str | None) -> str | None:
        if value is not None:
            LayerSpan.parse(value)
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        try:
            return check_device_spec(value)
        except DeviceError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("peers", mode="before")
    @classmethod
    def _split_peers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p.strip().rstrip("/") for p in value.split(",") if p.strip()]
        return value

    # -- derived values
    @property
    def span(self) -> LayerSpan | None:
        return LayerSpan.parse(self.layers) if self.layers else None

    @property
    def endpoint(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.data_dir / 'worker.db').resolve()}"

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def field_help() -> dict[str, str]:
    """Field name -> help text, for the CLI."""
    return shared_field_help(WorkerConfig)


def load_config(
    overrides: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> WorkerConfig:
    """Merge defaults < TOML file < environment < `overrides` (flags; None values are ignored) and validate."""
    return load_layered(
        WorkerConfig,
        role="worker",
        env_prefix=ENV_PREFIX,
        overrides=overrides,
        config_file=config_file,
        environ=environ,
    )
