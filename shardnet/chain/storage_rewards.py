"""Bindings of StorageRewards (contracts/StorageRewards.sol): storage deals, per-epoch challenges, payouts.

The contract is separate from the registry and reads only its node records (registered, not jailed). It is
deployed beside a registry with ``deploy_storage_rewards``; the bindings reuse the registry's plumbing
(simulate-then-send, revert and log decoding) over the StorageRewards artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_abi import encode as abi_encode
from eth_utils import to_checksum_address

from shardnet.chain.artifacts import load_artifact
from shardnet.chain.errors import ChainError, RevertDecoder
from shardnet.chain.registry_base import RegistryCore
from shardnet.chain.tx import TxResult, send_transaction

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

CONTRACT = "StorageRewards"
DEFAULT_RESPONSE_WINDOW = 3600
"""Seconds a node has to answer a challenge on chain."""
DEFAULT_EPOCH_SECONDS = 86_400
"""Length of a storage epoch: one challenge and one reward per epoch."""


@dataclass(frozen=True)
class Deal:
    owner: str
    node: str
    root: bytes
    leaves: int
    start: int
    epoch_seconds: int
    funded: int
    epochs: int
    open_block: int
    deadline: int
    reward_per_epoch: int
    escrow: int

    @property
    def challenge_open(self) -> bool:
        return self.deadline != 0


class StorageRewards(RegistryCore):
    """Send and read StorageRewards at ``address`` (as ``account`` when given)."""

    def __init__(
        self, w3: Web3, address: str, account: LocalAccount | None = None, *, deploy_block: int = 0
    ) -> None:
        super().__init__(w3, address, account, artifact=load_artifact(CONTRACT), deploy_block=deploy_block)

    def with_account(self, account: LocalAccount) -> StorageRewards:
        return StorageRewards(self.w3, self.address, account, deploy_block=self.deploy_block)

    def open_deal(
        self,
        node: str,
        root: bytes,
        leaves: int,
        reward_per_epoch: int,
        escrow: int,
        epoch_seconds: int = DEFAULT_EPOCH_SECONDS,
    ) -> int:
        """Escrow ``escrow`` (a whole number of epochs' rewards) for ``node``; epoch 0 begins now."""
        tx = self._send(
            "openDeal", to_checksum_address(node), root, leaves, reward_per_epoch, epoch_seconds, value=escrow
        )
        return int(tx.event("DealOpened").args["dealId"])

    def challenge(self, deal_id: int) -> tuple[int, int]:
        """Open the next epoch's challenge (as the owner or the node); returns (epoch, deadline)."""
        args = self._send("challenge", deal_id).event("Challenged").args
        return int(args["epoch"]), int(args["deadline"])

    def challenge_leaf(self, deal_id: int) -> int:
        """The leaf the open challenge asks for (drawn from the hash of the block that opened it)."""
        return int(self._view("challengeLeaf", deal_id))

    def respond(self, deal_id: int, segment: bytes, proof: list[bytes]) -> TxResult:
        return self._send("respond", deal_id, segment, proof)

    def expire(self, deal_id: int) -> TxResult:
        return self._send("expire", deal_id)

    def close_deal(self, deal_id: int) -> TxResult:
        return self._send("closeDeal", deal_id)

    def withdraw(self) -> TxResult:
        return self._send("withdraw")

    def claimable(self, account: str) -> int:
        return int(self._view("claimable", to_checksum_address(account)))

    def deal_count(self) -> int:
        return int(self._view("dealCount"))

    def get_deal(self, deal_id: int) -> Deal:
        d: Any = self._view("getDeal", deal_id)
        return Deal(
            to_checksum_address(d["owner"]),
            to_checksum_address(d["node"]),
            bytes(d["root"]),
            int(d["leaves"]),
            int(d["start"]),
            int(d["epochSeconds"]),
            int(d["funded"]),
            int(d["epochs"]),
            int(d["openBlock"]),
            int(d["deadline"]),
            int(d["rewardPerEpoch"]),
            int(d["escrow"]),
        )


def deploy_storage_rewards(
    w3: Web3, account: LocalAccount, registry: str, response_window: int = DEFAULT_RESPONSE_WINDOW
) -> str:
    """Deploy StorageRewards reading node records from ``registry``; returns its address."""
    art = load_artifact(CONTRACT)
    data = (
        art.bytecode
        + abi_encode(["address", "uint64"], [to_checksum_address(registry), response_window]).hex()
    )
    receipt = send_transaction(
        w3,
        account,
        to=None,
        data=data,
        decode=RevertDecoder(art.abi).decode,
        function=f"{CONTRACT} constructor",
    )
    address = receipt.get("contractAddress")
    if not address:
        raise ChainError(
            f"deploying {CONTRACT} produced no contract address (tx {receipt['transactionHash']})"
        )
    return to_checksum_address(address)
