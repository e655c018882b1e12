"""The dashboard's view of the chain: the registry's events folded incrementally (from the block after the last
one read, at most `max_blocks` blocks and `max_events` events a refresh) and the views that change with them
(nodes, live assignments), turned into one JSON document. Refreshes are throttled (`min_interval_s`): any number of page views cost at
most one round of chain reads a second, and every cache is bounded.

    snapshot = ChainSnapshot(Registry.from_deployment())
    doc = snapshot.current()   # {"chain", "models", "nodes", "coordinators", "jobs", "totals", "series"}
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from shardnet.chain.errors import ChainError, ChainUnavailable, ContractRevert, RpcError
from shardnet.chain.registry import AssignmentInfo, JobRecord, ModelInfo, NodeInfo, Registry, Settlement
from shardnet.chain.registry_base import LOG_RANGE
from shardnet.chain.tx import rpc
from shardnet.dashboard.coverage import replicas_per_layer, uncovered_ranges
from shardnet.dashboard.ledger import Ledger

#: Most blocks one refresh reads the logs of (a dashboard started late catches up over several refreshes)
MAX_BLOCKS_PER_REFRESH = 20_000
#: Most events one refresh folds (each may cost a few reads: block time, receipt, settlement calldata)
MAX_EVENTS_PER_REFRESH = 500
#: Most models and nodes a snapshot lists. Anyone may register a model: every model with a live assignment is
#: listed (announcing needs a staked node), and of those without one only the newest `MAX_IDLE_MODELS`
MAX_MODELS = 64
MAX_IDLE_MODELS = 8
#: A dashboard started with --from-block after models were registered looks at the newest this many once
SEED_MODELS = 1024
MAX_NODES = 512

log = logging.getLogger(__name__)


def public_error(exc: Exception) -> str:
    """What the page may say about a failed chain read: never the exception's text, which can hold the RPC URL
    (and with it an API key) or the node's own words; the details go to the dashboard's log."""
    if isinstance(exc, ChainUnavailable):
        return "the chain node does not answer (details in the dashboard's log)"
    if isinstance(exc, RpcError):
        return f"the chain node answered an error to {exc.method} (details in the dashboard's log)"
    if isinstance(exc, ContractRevert):
        return f"a registry read reverted ({exc.error}): is --registry the right address?"
    return "reading the chain failed (details in the dashboard's log)"


K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """A least-recently-used map of at most `size` entries."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get_or(self, key: K, make: Callable[[], V]) -> V:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        self._items[key] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


class ChainSnapshot:
    """Incremental reader of one registry for the dashboard (thread-safe: `current` may be called from any thread)."""

    def __init__(
        self,
        registry: Registry,
        *,
        min_interval_s: float = 1.0,
        max_blocks: int = MAX_BLOCKS_PER_REFRESH,
        max_events: int = MAX_EVENTS_PER_REFRESH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.min_interval_s = min_interval_s
        self.max_blocks = max_blocks
        self.max_events = max(max_events, 1)
        self._clock = clock
        self.resets = -1  # how many times the chain changed under the snapshot and it started over
        self._reset()
        self._lock = threading.Lock()
        self._doc: dict[str, Any] | None = None
        self._refreshed_at = float("-inf")
        self._error: str | None = None

    def _reset(self) -> None:
        """Forget everything read: at start, and when the chain under the snapshot changed (a reorg below the
        last block read, or a restarted node)."""
        self.next_block = self.registry.deploy_block  # the first block whose logs were not read yet
        self.synced_hash: str | None = None  # the hash of block next_block - 1 when it was read
        self.head = 0
        self.head_time = 0
        self.log_ranges: list[tuple[int, int]] = []  # the block ranges read, newest last (for tests; bounded)
        self.resets += 1
        self.ledger = Ledger(self)
        self.models: dict[int, ModelInfo] = {}  # the models listed (see MAX_MODELS)
        self.live: dict[int, list[int]] = {}  # model id -> live assignment ids (models that have some)
        self.idle_models: list[
            int
        ] = []  # the newest models without a live assignment (at most MAX_IDLE_MODELS)
        self.assignments: BoundedCache[int, AssignmentInfo] = BoundedCache(4096)
        self.nodes: dict[str, NodeInfo] = {}  # lowercase address -> its view
        self.claimable: dict[str, int] = {}
        self._min_stake: int | None = None
        self._times: BoundedCache[int, int] = BoundedCache(4096)
        self._gas: BoundedCache[str, int | None] = BoundedCache(2048)
        self._settlements: BoundedCache[str, list[Settlement]] = BoundedCache(64)
        self._applied: tuple[int, int] = (-1, -1)  # position of the last event folded (exactly once)
        self._seeded = False  # the models registered before the first block read were looked at
        self._chunk = LOG_RANGE  # blocks per eth_getLogs request (see _fold_logs)

    # ------------------------------------------------------------ ChainFacts (what the ledger asks)
    def block_time(self, block: int) -> int:
        def read() -> int:
            b = rpc(self.registry.w3, "eth_getBlockByNumber", [hex(block), False])
            return int(b["timestamp"], 16) if isinstance(b["timestamp"], str) else int(b["timestamp"])

        return self._times.get_or(block, read)

    def gas_used(self, tx_hash: str) -> int | None:
        def read() -> int | None:
            receipt = rpc(self.registry.w3, "eth_getTransactionReceipt", [tx_hash])
            return None if receipt is None else int(receipt["gasUsed"], 16)

        return self._gas.get_or(tx_hash, read) if tx_hash else None

    def settlements(self, tx_hash: str) -> list[Settlement]:
        def read() -> list[Settlement]:
            try:
                return self.registry.settlements_in(tx_hash)
            except (
                ValueError,
                TypeError,
                KeyError,
            ) as exc:  # not a direct settleJobs call (a wallet, a forwarder)
                log.info(
                    "dashboard: transaction %s is not a settleJobs call the split can be read from: %s",
                    tx_hash,
                    exc,
                )
                return []

        return self._settlements.get_or(tx_hash, read)

    def posted_paid(self, job_id: int) -> int:
        return self.registry.job_state(job_id)[1]

    def verification_held(self, job_id: int, record: JobRecord) -> int:
        """The verification share the job's settlement held (0 when it held none)."""
        held, _unspent = self.registry.verification_state(job_id)
        return self.registry.verification_share(record) if held else 0

    def _assignment(self, assignment_id: int) -> AssignmentInfo:
        return self.assignments.get_or(assignment_id, lambda: self.registry.get_assignment(assignment_id))

    # ------------------------------------------------------------ reading
    def _chain_changed(self, head: int) -> bool:
        """Whether the blocks already read are no longer the chain's (a reorg below them, a restarted node)."""
        if self.synced_hash is None:
            return False
        last = self.next_block - 1
        return head < last or self.registry.block_hash(last) != self.synced_hash

    def refresh(self) -> None:
        """Fold the events of the blocks not read yet (at most `max_blocks` blocks and `max_events` events), then
        read the views they touched. If the chain changed under what was read, start over from the deploy block."""
        reg = self.registry
        head = reg.block_number()
        if self._chain_changed(head):
            log.warning(
                "dashboard: the chain changed below block %d (reorg or restarted node): rereading it",
                self.next_block - 1,
            )
            self._reset()
        to_block = min(head, self.next_block + self.max_blocks - 1)
        if to_block >= self.next_block:
            read_to = self._fold_logs(to_block)
            if read_to >= self.next_block:
                self.synced_hash = self.registry.block_hash(read_to)
            self.log_ranges = [*self.log_ranges[-99:], (self.next_block, read_to)]
            self.next_block = read_to + 1
        self.head, self.head_time = head, self.block_time(head)
        if self._min_stake is None:
            self._min_stake = reg.min_stake()
        self._read_models()
        self._read_nodes()

    def _fold_logs(self, to_block: int) -> int:
        """Fold the events from `next_block` on, asking for the logs a chunk of blocks at a time and stopping at
        `max_events`; returns the last block whose events were all folded. The chunk shrinks where blocks are
        full of events (a stranger can emit many cheaply) and grows back where they are not, so that a refresh
        never decodes many more events than it folds."""
        folded, start = 0, self.next_block
        while start <= to_block:
            end = min(to_block, start + self._chunk - 1)
            events = self.registry.get_logs(start, end)
            if len(events) > 2 * self.max_events:  # as many blocks as hold about max_events at this density
                self._chunk = max(1, (end - start + 1) * self.max_events // len(events))
            elif len(events) < self.max_events // 2:
                self._chunk = min(self._chunk * 2, LOG_RANGE)
            for event in events:
                if event.position <= self._applied:
                    continue  # folded by an earlier refresh that stopped inside this block
                if folded == self.max_events:
                    return event.block_number - 1  # the rest next time (this block's folded events skipped)
                self.ledger.apply(event)
                self._applied = event.position
                folded += 1
            start = end + 1
        return to_block

    def _read_models(self) -> None:
        """Re-read the live assignments of the models whose events were folded; list every model that has some,
        and the newest few that have none (anyone may register models: a flood of them must not push out the
        ones being served, nor make the page draw thousands of empty maps)."""
        reg, ledger = self.registry, self.ledger
        touched = set(self.live) | set(self.idle_models) if ledger.all_models_touched else set()
        touched |= ledger.touched_models
        if not self._seeded:  # assignments announced before the first block read left no event here
            count = reg.model_count()
            touched |= set(range(max(1, count - SEED_MODELS + 1), count + 1))
            self._seeded = True
        for model_id in sorted(touched):
            live = reg.live_assignments(model_id)
            if live:
                self.live[model_id] = live
                if model_id in self.idle_models:
                    self.idle_models.remove(model_id)
                for aid in live:
                    node = self._assignment(aid).node.lower()
                    if node not in self.nodes:
                        ledger.touched_nodes.add(node)
            else:
                self.live.pop(model_id, None)
                if model_id not in self.idle_models:
                    self.idle_models.append(model_id)
        self.idle_models = sorted(self.idle_models)[-MAX_IDLE_MODELS:]
        listed = sorted(self.live)[-MAX_MODELS:] + self.idle_models
        for model_id in listed:
            if model_id not in self.models:
                self.models[model_id] = reg.get_model(model_id)
        self.models = {m: self.models[m] for m in sorted(listed)}
        ledger.touched_models.clear()
        ledger.all_models_touched = False

    def _read_nodes(self) -> None:
        touched = self.ledger.touched_nodes
        for node in sorted(touched):
            if node not in self.nodes and len(self.nodes) >= MAX_NODES:
                continue
            info = self.registry.get_node(node)
            if info.registered or info.stake or info.unbonding or node in self.nodes:
                self.nodes[node] = info
                self.claimable[node] = self.registry.claimable(node)
        touched.clear()

    def current(self) -> dict[str, Any]:
        """The latest document, refreshed first if the last refresh is older than `min_interval_s`."""
        with self._lock:
            now = self._clock()
            if self._doc is None or now - self._refreshed_at >= self.min_interval_s:
                try:
                    self.refresh()
                    self._error = None
                except ChainError as exc:
                    log.warning("dashboard: reading the chain failed: %s", exc)
                    self._error = public_error(exc)
                except Exception as exc:  # a bug or an unexpected answer: the page stays up and says so
                    log.exception("dashboard: reading the chain failed")
                    self._error = public_error(exc)
                self._refreshed_at = now
                self._doc = self._document()
            return self._doc

    # ------------------------------------------------------------ the document
    def _document(self) -> dict[str, Any]:
        return {
            "source": "chain",
            "chain": {
                "registry": self.registry.address,
                "head": self.head,
                "head_time": self.head_time,
                "synced_to": self.next_block - 1,
                "syncing": self.next_block <= self.head,
                "error": self._error,
            },
            "models": [self._model_json(m) for m in self.models.values()],
            "nodes": [self._node_json(n) for n in self.nodes.values()],
            "coordinators": [
                {"address": a, "endpoint": e, "approved": ok}
                for a, (e, ok) in self.ledger.coordinators.items()
            ],
            "jobs": [j.as_json() for j in reversed(self.ledger.jobs.values())],
            "totals": self.ledger.totals.as_json(),
            "series": self.ledger.series(self.head_time),
            "coordinator": None,
        }

    def _model_json(self, m: ModelInfo) -> dict[str, Any]:
        assignments = []
        for aid in self.live.get(m.model_id, []):
            a = self._assignment(aid)
            node = self.nodes.get(a.node.lower())
            bonded = node is not None and node.registered and not node.jailed
            staked = node is not None and node.stake >= (self._min_stake or 0)
            assignments.append(
                {
                    "assignment_id": aid,
                    "node": a.node,
                    "endpoint": node.endpoint if node else None,
                    "span": [a.start, a.end],
                    "chain_ok": bonded and staked,  # what the chain alone says: registered, unjailed, staked
                    "health": None,  # the coordinator fills it in: {"down", "excluded", "rtt_s", "step_s", ...}
                    "serving": bonded and staked,
                }
            )
        doc = {
            "model_id": m.model_id,
            "name": m.name,
            "num_layers": m.num_layers,
            "manifest_cid": m.manifest_cid,
            "price_per_layer_token_wei": str(m.price_per_layer_token),
            "assignments": assignments,
        }
        add_coverage(doc)
        return doc

    def _node_json(self, n: NodeInfo) -> dict[str, Any]:
        key = n.address.lower()
        return {
            "address": n.address,
            "endpoint": n.endpoint,
            "stake_wei": str(n.stake),
            "unbonding_wei": str(n.unbonding),
            "unbonding_until": n.unbonding_until,
            "bonded_until": n.bonded_until,
            "registered": n.registered,
            "jailed": n.jailed,
            "live_assignments": n.live_assignments,
            "slashed_wei": str(self.ledger.slashed.get(key, 0)),
            "earned_wei": str(self.ledger.earned.get(key, 0)),
            "claimable_wei": str(self.claimable.get(key, 0)),
        }


def add_coverage(model: dict[str, Any]) -> None:
    """Set a model document's `replicas` (per layer, counting assignments that are `serving`) and `uncovered`."""
    spans = [tuple(a["span"]) for a in model["assignments"] if a["serving"]]
    counts = replicas_per_layer(int(model["num_layers"]), [(int(s), int(e)) for s, e in spans])
    model["replicas"] = counts
    model["uncovered"] = [list(r) for r in uncovered_ranges(counts)]
