"""Deploying the registry, and the deployment file every command reads.

The deployment file (JSON) records where the registry lives:
`{"chain_id", "rpc_url", "registry", "deploy_block", "owner", "params": {...}}`. Its path is the
`--deployment` flag, else `SHARDNET_DEPLOYMENT`, else `.shardnet/deployment.json`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_abi import encode as abi_encode
from eth_utils import to_checksum_address

from shardnet.chain.artifacts import ContractArtifact, load_artifact
from shardnet.chain.errors import ChainError, RevertDecoder, _canonical_type
from shardnet.chain.registry import RegistryParams
from shardnet.chain.tx import chain_id, send_transaction

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

log = logging.getLogger(__name__)

DEFAULT_DEPLOYMENT = Path(".shardnet") / "deployment.json"
DEPLOYMENT_ENV = "SHARDNET_DEPLOYMENT"


@dataclass(frozen=True)
class Deployment:
    """Where a registry is deployed and with which parameters."""

    chain_id: int
    rpc_url: str
    registry: str
    deploy_block: int
    owner: str
    params: dict[str, int] = field(hash=False)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def save(self, path: str | Path | None = None) -> Path:
        """Write the deployment file atomically; returns its path."""
        target = deployment_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(target)
        return target


def deployment_path(path: str | Path | None = None) -> Path:
    """The deployment file to use: `path`, else $SHARDNET_DEPLOYMENT, else .shardnet/deployment.json."""
    return Path(path or os.environ.get(DEPLOYMENT_ENV) or DEFAULT_DEPLOYMENT)


def load_deployment(path: str | Path | None = None) -> Deployment:
    """Read a deployment file written by `shardnet devnet` or `shardnet deploy`."""
    target = deployment_path(path)
    try:
        raw: dict[str, Any] = json.loads(target.read_text())
    except FileNotFoundError:
        raise ChainError(
            f"no deployment file at {target}: start a devnet with `shardnet devnet`, deploy with "
            f"`shardnet deploy`, or point --deployment / {DEPLOYMENT_ENV} at an existing one"
        ) from None
    except json.JSONDecodeError as exc:
        raise ChainError(f"deployment file {target} is not valid JSON ({exc}): redeploy or fix it") from exc
    missing = [k for k in ("chain_id", "rpc_url", "registry", "deploy_block", "owner") if k not in raw]
    if missing:
        raise ChainError(
            f"deployment file {target} lacks {', '.join(missing)}: redeploy with `shardnet deploy`"
        )
    return Deployment(
        chain_id=int(raw["chain_id"]),
        rpc_url=str(raw["rpc_url"]),
        registry=to_checksum_address(raw["registry"]),
        deploy_block=int(raw["deploy_block"]),
        owner=to_checksum_address(raw["owner"]),
        params={k: int(v) for k, v in dict(raw.get("params") or {}).items()},
    )


def deploy_registry(
    w3: Web3,
    account: LocalAccount,
    params: RegistryParams | None = None,
    *,
    rpc_url: str | None = None,
    artifact: ContractArtifact | None = None,
) -> Deployment:
    """Deploy a ShardRegistry owned by `account`; returns the Deployment (not yet saved)."""
    params = params or RegistryParams()
    art = artifact or load_artifact()
    constructors = art.entries("constructor")
    inputs = constructors[0].get("inputs", []) if constructors else []
    args = params.as_args()
    if len(inputs) != len(args):
        raise ChainError(
            f"the {art.name} constructor takes {len(inputs)} arguments, shardnet passes {len(args)} "
            "(minStake, unbondingPeriod, jobTimeout, coordinatorFeeBps, slashBps, maxPromptTokens, approvalDelay, "
            "disputeWindow, protocolFeeBps, maxJobTokens, verifyBps): "
            "the artifact and this version of shardnet disagree; run `shardnet compile`"
        )
    data = art.bytecode + abi_encode([_canonical_type(p) for p in inputs], args).hex()
    receipt = send_transaction(
        w3,
        account,
        to=None,
        data=data,
        decode=RevertDecoder(art.abi).decode,
        function=f"{art.name} constructor",
    )
    address = receipt.get("contractAddress")
    if not address:
        raise ChainError(
            f"deploying {art.name} produced no contract address (tx {receipt['transactionHash']})"
        )
    block = int(receipt["blockNumber"], 16)
    url = rpc_url or str(getattr(w3.provider, "endpoint_uri", ""))
    dep = Deployment(
        chain_id=chain_id(w3),
        rpc_url=url,
        registry=to_checksum_address(address),
        deploy_block=block,
        owner=account.address,
        params=asdict(params),
    )
    log.info("deployed %s at %s in block %d (chain %d)", art.name, dep.registry, block, dep.chain_id)
    return dep
