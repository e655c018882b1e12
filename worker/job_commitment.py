"""Protocol v2 at session close: the worker's signed commitment for a job, built from its sessions.

Each leaf binds a step's input, output and fingerprint (`worker.verification.commit_step`). When the coordinator closes a session of a job, the worker signs its EIP-712 `Commitment` for the job over
every session of it on this worker (stored first when there is a database) and hands it back in the close
answer. A session that ends without a close (expired, drained, evicted, failed) is signed at once and due at
once. Training sessions (worker/training.py) record their steps in the same tables and sign through `sign_job`. Signing and storing run on the server's database thread, after the session's close is queued there.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shardnet.chain.commitments import SignedCommitment
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_root
from worker.sessions import Session
from worker.state import WorkerState

#: Signs a job's commitment: (job_id, span, positions, steps, root) -> the EIP-712 signed commitment.
CommitmentSigner = Callable[[int, LayerSpan, int, int, bytes], SignedCommitment]


class JobCommitments:
    """Signs (and, with a database, stores) this worker's commitment for the job of a closed session."""

    def __init__(self, signer: CommitmentSigner | None, state: WorkerState | None, span: LayerSpan) -> None:
        self._signer = signer
        self._state = state
        self._span = span

    def due(self, session: Session) -> bool:
        """Whether the session's job gets a signed commitment: a signer, a job (job 0: no job, nothing to be
        paid) and at least one step."""
        return self._signer is not None and bool(session.job_id) and bool(session.steps)

    def sign(self, session: Session, handed_at: float | None = None) -> SignedCommitment | None:
        """The job's signed commitment over every session of it on this worker (stored first when there is a
        database); None when nothing was computed for it."""
        assert self._signer is not None and session.job_id
        if self._state is None:
            return self._signer(
                session.job_id,
                self._span,
                session.length,
                session.steps,
                merkle_root(session.leaves),
            )
        return self.sign_job(session.job_id, handed_at)

    def sign_job(self, job_id: int, handed_at: float | None = None) -> SignedCommitment | None:
        """Sign and store the job's commitment over every session of it recorded in the database (inference and
        training alike), before it is handed out; `handed_at` 0 makes it due for the fallback post at once.
        None when nothing was computed for the job (or there is no signer or database)."""
        if self._signer is None or self._state is None or not job_id:
            return None
        work = self._state.job_work(job_id)
        if work is None:
            return None
        signed = self._signer(
            work.job_id, work.span, work.billable_positions, len(work.step_hashes), work.root
        )
        self._state.save_commitment(signed, work.ticket, time.time() if handed_at is None else handed_at)
        return signed
