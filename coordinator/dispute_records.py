"""The record of a slash that the coordinator's database keeps beside the transaction, and its hash (the
evidence hash of the dispute record)."""

from __future__ import annotations

import json

from eth_utils import keccak

from coordinator.dispute_answers import DisputeOutcome


def outcome_record(job_id: int, hop_index: int, outcome: DisputeOutcome) -> dict[str, object]:
    """The JSON-able record of a slash (what the coordinator's database keeps beside the transaction)."""
    return {
        "format": "shardnet-dispute/1",
        "job_id": job_id,
        "hop_index": hop_index,
        "node": outcome.node.lower(),
        "verdicts": [
            {
                "verifier": a.verifier.lower(),
                "guilty": a.guilty,
                "leaf_index": a.leaf_index,
                "note": a.note,
                "tokens": a.tokens,
            }
            for a in outcome.answers
        ],
    }


def record_hash(record: dict[str, object]) -> bytes:
    return keccak(json.dumps(record, sort_keys=True, separators=(",", ":")).encode())
