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
EPOCH = 10_000
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
        rewards.open_deal(
            stranger.address, bytes.fromhex(kept.merkle_root), kept.leaves, REWARD, 3 * REWARD, EPOCH
        )
    deal_kept = rewards.open_deal(
        holder.address, bytes.fromhex(kept.merkle_root), kept.leaves, REWARD, 3 * REWARD, EPOCH
    )
    deal_lost = rewards.open_deal(
        loser.address, bytes.fromhex(lost.merkle_root), lost.leaves, REWARD, 3 * REWARD, EPOCH
    )

    assert rewards.challenge(deal_kept)[0] == 0
    assert rewards.challenge(deal_lost)[0] == 0
    anvil.mine()  # the leaf is drawn from the hash of the block that opened the challenge
    leaf_kept, leaf_lost = rewards.challenge_leaf(deal_kept), rewards.challenge_leaf(deal_lost)
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
    rewards.close_deal(deal_kept)  # epoch 0 was settled, epochs 1 and 2 have not begun: both refunded
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


def _balances_cover_debts(anvil, rewards: StorageRewards, address: str, accounts: list[str]) -> None:
    """Conservation of ether: the contract holds exactly what it owes (claims plus every deal's escrow)."""
    owed = sum(rewards.claimable(a) for a in accounts)
    escrow = sum(rewards.get_deal(i).escrow for i in range(rewards.deal_count()))
    assert anvil.w3.eth.get_balance(address) == owed + escrow


def test_a_node_is_paid_for_elapsed_epochs_nobody_challenged(
    tmp_path, anvil, deployment, registry_for, accounts
):
    """The node opens its own overdue epochs; the owner's close refunds only epochs not yet begun."""
    owner, node, stranger = accounts[0], accounts[4], accounts[6]
    registry_for(node).register_node("http://127.0.0.1:1", TEST_PARAMS.min_stake)
    address = deploy_storage_rewards(anvil.w3, owner, deployment.registry, WINDOW)
    rewards = StorageRewards(anvil.w3, address, owner)
    everyone = [owner.address, node.address, stranger.address]
    f = _sealed(tmp_path)
    piece = f.pieces[2]
    held = tmp_path / "owner" / piece.cid
    with reverts("StorageRewardsBadDeal", reason="escrow must be a whole number of epochs"):
        rewards.open_deal(
            node.address, bytes.fromhex(piece.merkle_root), piece.leaves, REWARD, REWARD + 1, EPOCH
        )
    deal = rewards.open_deal(
        node.address, bytes.fromhex(piece.merkle_root), piece.leaves, REWARD, 5 * REWARD, EPOCH
    )
    as_node = rewards.with_account(node)

    assert as_node.challenge(deal)[0] == 0  # the node itself opens epoch 0, which has begun
    anvil.mine()
    answer_challenge(as_node, deal, held)
    start = rewards.get_deal(deal).start
    with reverts("StorageRewardsEpochNotBegun", dealId=deal, epoch=1, beginsAt=start + EPOCH):
        as_node.challenge(deal)  # epoch 1 has not begun: no paying ahead of time
    with reverts("StorageRewardsNotYours", dealId=deal, caller=stranger.address):
        rewards.with_account(stranger).challenge(deal)
    _balances_cover_debts(anvil, rewards, address, everyone)

    anvil.advance_time(2 * EPOCH + 10)  # epochs 1 and 2 elapse (2 has begun) and the owner challenges neither
    rewards.close_deal(deal)  # refunds epochs 3 and 4 only; 1 and 2 stay in escrow for the node
    d = rewards.get_deal(deal)
    assert (d.funded, d.epochs, d.escrow) == (3, 1, 2 * REWARD)
    assert rewards.claimable(owner.address) == 2 * REWARD
    _balances_cover_debts(anvil, rewards, address, everyone)
    for epoch in (1, 2):  # the node opens each overdue epoch after the close and is paid for it
        assert as_node.challenge(deal)[0] == epoch
        anvil.mine()
        answer_challenge(as_node, deal, held)
        _balances_cover_debts(anvil, rewards, address, everyone)
    assert rewards.claimable(node.address) == 3 * REWARD
    with reverts("StorageRewardsBadDeal", reason="every funded epoch is settled"):
        as_node.challenge(deal)
    rewards.close_deal(deal)  # a second close refunds nothing more
    assert rewards.claimable(owner.address) == 2 * REWARD and rewards.get_deal(deal).escrow == 0
    as_node.withdraw()
    rewards.withdraw()
    assert anvil.w3.eth.get_balance(address) == 0
