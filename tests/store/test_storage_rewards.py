"""Storage is paid and checked (issue 15 item 4): StorageRewards on a real anvil beside the registry. A node
holding its piece answers the epoch's challenge on chain and is paid; a node that lost its piece cannot answer,
the challenge expires and the reward goes back to the owner. Off-chain spot checks against a real node's HTTP
routes pass while it holds the piece and fail once it lost it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from shardnet.chain.storage_rewards import StorageRewards, deploy_storage_rewards
from shardnet.store.private.audit import answer_challenge, spot_check
from shardnet.store.private.merkle import leaf_hashes, merkle_proof, read_segment
from shardnet.store.private.put import put_private
from tests.chain.registry_world import reverts
from tests.fixtures_chain import TEST_PARAMS
from tests.fixtures_store import serve_store

WINDOW = 600
REWARD = 10**15


def _sealed(tmp_path: Path):
    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(300_000))
    manifest, _ = put_private(src, tmp_path / "owner", n=6, k=4)
    return manifest.files[0]


def test_node_holding_its_piece_is_paid_one_that_lost_it_is_not(
    tmp_path, anvil, deployment, registry_for, accounts
):
    owner, holder, loser, stranger = accounts[0], accounts[4], accounts[5], accounts[6]
    for node in (holder, loser):
        registry_for(node).register_node("http://127.0.0.1:1", TEST_PARAMS.min_stake)
    address = deploy_storage_rewards(anvil.w3, owner, deployment.registry, WINDOW)
    rewards = StorageRewards(anvil.w3, address, owner)
    f = _sealed(tmp_path)
    kept, lost = f.pieces[0], f.pieces[1]
    holder_store, loser_store = tmp_path / "holder", tmp_path / "loser"
    holder_store.mkdir()
    loser_store.mkdir()
    shutil.copy(tmp_path / "owner" / kept.cid, holder_store / kept.cid)
    shutil.copy(tmp_path / "owner" / lost.cid, loser_store / lost.cid)

    with reverts("StorageRewardsNodeNotEligible", node=stranger.address):  # not registered on the registry
        rewards.open_deal(stranger.address, bytes.fromhex(kept.merkle_root), kept.leaves, REWARD, 3 * REWARD)
    deal_kept = rewards.open_deal(
        holder.address, bytes.fromhex(kept.merkle_root), kept.leaves, REWARD, 3 * REWARD
    )
    deal_lost = rewards.open_deal(
        loser.address, bytes.fromhex(lost.merkle_root), lost.leaves, REWARD, 3 * REWARD
    )

    leaf_kept, _ = rewards.challenge(deal_kept)
    leaf_lost, _ = rewards.challenge(deal_lost)
    assert 0 <= leaf_kept < kept.leaves and 0 <= leaf_lost < lost.leaves
    with reverts(
        "StorageRewardsChallengeOpen", dealId=deal_kept, deadline=rewards.get_deal(deal_kept).deadline
    ):
        rewards.challenge(deal_kept)

    answered = answer_challenge(rewards.with_account(holder), deal_kept, holder_store / kept.cid)
    # a 1 KiB segment and a proof of ceil(log2(leaves)) hashes: cheap enough to answer every epoch
    print(f"respond gas: {answered.gas_used} for a piece of {kept.leaves} leaves")
    assert answered.gas_used < 120_000
    (
        loser_store / lost.cid
    ).unlink()  # the loser lost its piece; the best it can send is another piece's bytes
    wrong = tmp_path / "owner" / f.pieces[2].cid
    with reverts("StorageRewardsBadProof", dealId=deal_lost, leaf=leaf_lost):
        rewards.with_account(loser).respond(
            deal_lost, read_segment(wrong, leaf_lost), merkle_proof(leaf_hashes(wrong), leaf_lost)
        )
    with reverts("StorageRewardsNotYours", dealId=deal_kept, caller=stranger.address):
        rewards.with_account(stranger).respond(deal_kept, b"", [])
    with reverts("StorageRewardsTooEarly", dealId=deal_lost, deadline=rewards.get_deal(deal_lost).deadline):
        rewards.expire(deal_lost)
    anvil.advance_time(WINDOW + 1)
    rewards.with_account(stranger).expire(deal_lost)

    assert rewards.claimable(holder.address) == REWARD
    assert rewards.claimable(loser.address) == 0
    assert rewards.claimable(owner.address) == REWARD
    assert rewards.get_deal(deal_kept).escrow == 2 * REWARD and not rewards.get_deal(deal_kept).challenge_open
    before = anvil.w3.eth.get_balance(holder.address)
    tx = rewards.with_account(holder).withdraw()
    assert tx.event("Withdrawn").args["amount"] == REWARD
    assert anvil.w3.eth.get_balance(holder.address) > before
    with reverts("StorageRewardsNothingToWithdraw", account=loser.address):
        rewards.with_account(loser).withdraw()
    rewards.close_deal(deal_kept)
    assert rewards.claimable(owner.address) == 3 * REWARD
    # solvent: what the contract holds is exactly what it owes (the owner's claim and the open deal's escrow)
    held = anvil.w3.eth.get_balance(address)
    assert held == rewards.claimable(owner.address) + rewards.get_deal(deal_lost).escrow == 5 * REWARD


def test_spot_checks_against_a_real_node(tmp_path: Path) -> None:
    from shardnet.store.private.node import make_piece_routes

    f = _sealed(tmp_path)
    node_store = tmp_path / "node"
    node_store.mkdir()
    piece = f.pieces[3]
    shutil.copy(tmp_path / "owner" / piece.cid, node_store / piece.cid)
    with serve_store(node_store, make_piece_routes(node_store)) as url:
        results = [spot_check(url, piece) for _ in range(5)] + [spot_check(url, piece, leaf=piece.leaves - 1)]
        assert all(r.passed for r in results), results
        assert not spot_check(url, f.pieces[2]).passed  # a piece it never held
        (node_store / piece.cid).unlink()
        gone = spot_check(url, piece)
        assert not gone.passed and "does not hold" in gone.detail
