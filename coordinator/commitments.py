"""Commitments a worker posted itself (protocol v2 fallback), as the chain's `CommitmentPosted` events tell.

The coordinator settles a job with the signed commitments the workers handed it when their sessions closed; it
does not wait for anything on chain. A worker that did not get its commitment settled posts it itself
(`postCommitment`); the registry then skips that hop in a later settlement, so including it is harmless. The
board records those events for the jobs this coordinator is running, so a job's view can say who posted.
"""

from __future__ import annotations


class CommitmentBoard:
    """Nodes that posted their own commitment, per job this coordinator tracks."""

    def __init__(self) -> None:
        self._posted: dict[int, set[str]] = {}

    def track(self, job_id: int) -> None:
        """Start recording self-posted commitments of `job_id`."""
        self._posted.setdefault(job_id, set())

    def forget(self, job_id: int) -> None:
        self._posted.pop(job_id, None)

    def posted(self, job_id: int, node: str) -> None:
        """A CommitmentPosted event (ignored for jobs nobody tracks: other coordinators' jobs)."""
        if job_id in self._posted:
            self._posted[job_id].add(node.lower())

    def posted_by(self, job_id: int) -> set[str]:
        """The nodes (lower case) seen posting their own commitment for `job_id`."""
        return set(self._posted.get(job_id, set()))
