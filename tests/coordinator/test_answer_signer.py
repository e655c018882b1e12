"""`answer_signer`: who signed a verifier's /v1/verify answer, the one helper behind both a guilty verdict's check
(`DisputeRunner._ask`) and an innocent one's (`verifier_pay.innocent_signature`); no chain needed."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_utils import keccak

from coordinator.dispute_answers import answer_signer
from coordinator.verifier_pay import innocent_signature
from shardnet.chain.commitments import INNOCENT_LEAF, INNOCENT_LEAF_INDEX, sign_commitment, sign_verdict
from shardnet.span import LayerSpan
from shardnet.wire.eip712 import Domain

DOMAIN = Domain(31337, "0x" + "5f" * 20)
ACCUSED = Account.from_key(b"\x01" * 32)
VERIFIER = Account.from_key(b"\x02" * 32)
SIGNED = sign_commitment(
    ACCUSED, DOMAIN, job_id=7, span=LayerSpan(0, 2), positions=12, steps=7, root=keccak(text="root")
)
LEAF = keccak(text="leaf 3")


def _answer(leaf_index: int, leaf: bytes, job_id: int = 7) -> dict[str, object]:
    sig = sign_verdict(
        VERIFIER,
        DOMAIN,
        job_id=job_id,
        accused=ACCUSED.address,
        root=SIGNED.root,
        leaf_index=leaf_index,
        leaf=leaf,
    )
    return {"guilty": True, "leaf_index": leaf_index, "leaf": "0x" + leaf.hex(), "signature": sig.hex()}


def test_the_signer_of_a_verdict_on_the_leaf_it_names_is_the_verifier() -> None:
    data = _answer(3, LEAF)
    signature, signer = answer_signer(data, DOMAIN, 7, SIGNED, 3, LEAF)
    assert signer == VERIFIER.address and signature.hex() == data["signature"]
    # the same signature read as a verdict on another leaf, or of another job, recovers someone else
    assert answer_signer(data, DOMAIN, 7, SIGNED, 4, LEAF)[1] != VERIFIER.address
    assert answer_signer(_answer(3, LEAF, job_id=8), DOMAIN, 7, SIGNED, 3, LEAF)[1] != VERIFIER.address


@pytest.mark.parametrize("signature", [None, "0x1234", 5])
def test_an_answer_without_a_readable_signature_raises(signature: object) -> None:
    data: dict[str, object] = {"guilty": True, "leaf_index": 3}
    if signature is not None:
        data["signature"] = signature
    with pytest.raises((KeyError, TypeError, ValueError)):
        answer_signer(data, DOMAIN, 7, SIGNED, 3, LEAF)


def test_an_innocent_answer_is_payable_only_when_the_verifier_signed_it() -> None:
    innocent = _answer(INNOCENT_LEAF_INDEX, INNOCENT_LEAF) | {"guilty": False}
    assert innocent_signature(innocent, DOMAIN, 7, SIGNED, VERIFIER.address) is not None
    assert innocent_signature(innocent, DOMAIN, 7, SIGNED, ACCUSED.address) is None  # another key signed it
    assert (
        innocent_signature(_answer(3, LEAF) | {"guilty": False}, DOMAIN, 7, SIGNED, VERIFIER.address) is None
    )
    assert innocent_signature({"guilty": False}, DOMAIN, 7, SIGNED, VERIFIER.address) is None
