"""Fingerprints: a compact, drift-tolerant summary of the hidden states (or logits) a hop sent for one step.

In the spirit of TOPLOC (Prime Intellect: top-k activations, a few hundred bytes per 32 tokens), but
one fingerprint per step so that each step is a leaf of the job's Merkle tree. Per position of the
step, over the output vector h (hidden states, or the last hop's logits):

- the indices of the `k` largest |h_i| (ties broken by the lower index) and h at those indices;
- `m` signed projections  p_j = (r_j . h) / sqrt(d), r_j a fixed +-1 vector (seeded by d and j), so
  that noise spread over all coordinates shows even where the top-k coordinates do not move.

Values are stored as IEEE fp16, little endian. The bytes are a function of the output tensor alone
(ties to the lower index, projections summed exactly, one rounding to fp16), so anyone holding the
bytes a hop sent can recompute its fingerprint bit for bit: `check_hop(..., sent=...)` does. Byte layout (deterministic for a given h):

    header  u8 version (1) | u8 k | u8 m | u8 index width (2 or 4 bytes) | u16 positions
    then per position:  k indices | k fp16 values | m fp16 projections

With the defaults (k=2, m=2, d < 65536) a position costs 12 bytes, a one-position decode step 18:
576 bytes per 32 decode steps.

The verifier recomputes h_ref and measures, per position, the largest of
  |v - h_ref[i]| / max(|h_ref[i]|, rms(h_ref))   (committed values, at their own scale),
  |p_j - p_j(h_ref)| / rms(h_ref)                (projections: relative error of the whole vector),
  (kth|h_ref| - |h_ref[i]|) / rms(h_ref), if > 0  (a committed index that is not near the top-k).
A step's distance is the largest over its positions; `shardnet.verify.tolerance` says how large an
honest one can be.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from eth_utils import keccak

FORMAT_VERSION = 1
DEFAULT_TOP_K = 2
DEFAULT_PROJECTIONS = 2
_HEADER = struct.Struct("<BBBBH")
_PROJECTION_SEED = 0x5EED_F1A6
BATCH_VALUES = 1 << 16  # `make_fingerprints` takes rows together up to this many values


class FingerprintError(ValueError):
    """A fingerprint's bytes are malformed or do not fit the output they are compared with."""


@dataclass(frozen=True)
class Fingerprint:
    """A decoded fingerprint: per position, top-k indices and values, and the projections."""

    indices: torch.Tensor  # [n, k] int64
    values: torch.Tensor  # [n, k] float32 (fp16-rounded)
    projections: torch.Tensor  # [n, m] float32 (fp16-rounded)

    @property
    def positions(self) -> int:
        return int(self.indices.shape[0])


@lru_cache(maxsize=16)
def projection_matrix(width: int, count: int) -> torch.Tensor:
    """The fixed +-1 vectors [width, count] (float32) of the projections; the same on every machine."""
    gen = torch.Generator().manual_seed(_PROJECTION_SEED + width)
    signs = torch.randint(0, 2, (width, count), generator=gen, dtype=torch.int64)
    return (signs * 2 - 1).to(torch.float32)


def _rows(output: torch.Tensor) -> torch.Tensor:
    """An output [1, n, d], [n, d] or [d] as float32 rows [n, d] on the CPU."""
    if output.dim() == 3:
        if output.shape[0] != 1:
            raise FingerprintError(f"fingerprints take one sequence, got batch {output.shape[0]}")
        output = output[0]
    elif output.dim() == 1:
        output = output.unsqueeze(0)
    if output.dim() != 2 or output.shape[0] == 0 or output.shape[1] < 2:
        raise FingerprintError(
            f"fingerprints take outputs [1, n, d] with n >= 1, d >= 2, got {list(output.shape)}"
        )
    # a CPU float32 copy: fingerprints never depend on the device (or dtype) the output was computed on
    return output.detach().to(device="cpu", dtype=torch.float32)


@lru_cache(maxsize=16)
def _signs64(width: int, count: int) -> np.ndarray:
    return projection_matrix(width, count).T.numpy().astype(np.float64)  # [count, width]


def _top_indices(rows: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest |h| per row, ties to the lower index, [n, k] (topk, then ties resolved
    by index: the same as a stable sort, and fast on a vocabulary of logits).

    A row whose k-th largest |h| is reached by exactly k values (no tie across the cut, no NaN: nearly
    every row) takes its k indices from topk, ordered as below for all rows at once; the others go through
    the candidates one row at a time."""
    mags = rows.abs()
    top = torch.topk(mags, k, dim=1)
    kth = top.values[:, k - 1 :]
    clean = (mags >= kth).sum(dim=1) == k  # exactly the k candidates topk found (NaN never qualifies)
    ascending = torch.sort(top.indices, dim=1).values  # the candidates in index order
    by_value = torch.sort(torch.gather(mags, 1, ascending), dim=1, descending=True, stable=True).indices
    fast = torch.gather(ascending, 1, by_value)
    if bool(clean.all()):
        return fast
    chosen = []
    for row, threshold, ok, picked_fast in zip(mags, kth, clean.tolist(), fast, strict=True):
        if ok:
            chosen.append(picked_fast)
            continue
        candidates = torch.nonzero(row >= threshold).flatten()  # ascending index; NaN never qualifies
        order = torch.sort(row[candidates], descending=True, stable=True).indices
        picked = candidates[order][:k]
        if picked.numel() < k:  # NaN among the values: fall back to a stable sort of the whole row
            picked = torch.sort(row, descending=True, stable=True).indices[:k]
        chosen.append(picked)
    return torch.stack(chosen)


def _project(rows: torch.Tensor, count: int) -> torch.Tensor:
    """Projections for comparing (fast, float64 matmul; the last bits may vary by machine)."""
    width = rows.shape[1]
    if count == 0:
        return rows.new_zeros((rows.shape[0], 0))
    return (
        rows.to(torch.float64) @ projection_matrix(width, count).to(torch.float64) / math.sqrt(width)
    ).float()


def exact_sum(values: np.ndarray) -> float:
    """The exactly rounded sum of float32 values (given as float64), whatever the machine.

    Values are grouped by binary exponent into windows narrow enough that float64 adds each group
    without rounding (24-bit mantissas, at most 2^b values: windows of 29 - b binades); the group sums
    are then added with math.fsum (exactly rounded). As exact as fsum over all values, ~100x faster.
    """
    flat = values.reshape(-1)
    if flat.size == 0:
        return 0.0
    _, exponents = np.frexp(flat)
    window = max(1, 29 - int(math.ceil(math.log2(flat.size + 1))))
    groups = (exponents - exponents.min()) // window
    return math.fsum(np.bincount(groups, weights=flat).tolist())


def _project_exact(rows: torch.Tensor, count: int) -> torch.Tensor:
    """Projections for committing: each sum exactly rounded (`exact_sum` of the exact float32 +-h_i),
    so every machine writes the same bytes for the same output, whatever its BLAS or thread count."""
    width = rows.shape[1]
    signs = _signs64(width, count)
    data = rows.numpy().astype(np.float64)
    root = math.sqrt(width)
    out = [[total / root for total in sums] for sums in _signed_exact_sums_rows(data, signs)]
    return torch.tensor(out, dtype=torch.float64).reshape(rows.shape[0], count)


def _signed_exact_sums_rows(data: np.ndarray, signs: np.ndarray) -> list[list[float]]:
    """`[_signed_exact_sums(row, signs) for row in data]` ([n, width]), bit for bit, with one bincount per sign
    for all rows: each row's groups get bins of their own (offset by the row), filled in the same order as
    its own bincount would, and its sums read back over its own bins only."""
    n, width = data.shape
    if n == 0 or width == 0 or len(signs) == 0:
        return [[0.0] * len(signs) for _ in range(n)]
    _, exponents = np.frexp(data)
    window = max(1, 29 - int(math.ceil(math.log2(width + 1))))
    groups = (exponents - exponents.min(axis=1, keepdims=True)) // window
    used = (groups.max(axis=1) + 1).tolist()  # bins of each row: what its own bincount returns
    bins = int(max(used))
    flat = (groups + np.arange(n)[:, None] * bins).reshape(-1)
    sums = [
        np.bincount(flat, weights=(data * sign).reshape(-1), minlength=n * bins).reshape(n, bins)
        for sign in signs
    ]
    return [[math.fsum(s[r, : used[r]].tolist()) for s in sums] for r in range(n)]


def _signed_exact_sums(row: np.ndarray, signs: np.ndarray) -> list[float]:
    """`[exact_sum(row * sign) for sign in signs]`, bit for bit, with the exponent grouping done once: a +-1
    sign changes no value's binary exponent, so every signed copy falls into the same groups (this halves
    the cost of a fingerprint of a vocabulary of logits)."""
    if row.size == 0 or len(signs) == 0:
        return [0.0] * len(signs)
    _, exponents = np.frexp(row)
    window = max(1, 29 - int(math.ceil(math.log2(row.size + 1))))
    groups = (exponents - exponents.min()) // window
    return [math.fsum(np.bincount(groups, weights=row * sign).tolist()) for sign in signs]


def make_fingerprint(
    output: torch.Tensor, k: int = DEFAULT_TOP_K, projections: int = DEFAULT_PROJECTIONS
) -> bytes:
    """The fingerprint bytes of one step's output ([1, n, d] hidden states or [1, 1, vocab] logits)."""
    rows = _rows(output)
    n, width = rows.shape
    if not 1 <= k <= min(width, 255) or not 0 <= projections <= 255:
        raise FingerprintError(
            f"top-k must lie in 1..{min(width, 255)} and projections in 0..255, got {k}, {projections}"
        )
    if n > 0xFFFF:
        raise FingerprintError(f"a step of {n} positions is too long for one fingerprint (at most 65535)")
    index_width = 2 if width <= 0xFFFF else 4
    idx = _top_indices(rows, k)
    values = torch.gather(rows, 1, idx)
    proj = _project_exact(rows, projections)
    # fp16 saturates at 65504: clamp so an honest huge value stays finite; NaN stays NaN (and fails checks)
    vals16 = values.clamp(-65504.0, 65504.0).to(torch.float16)  # float32 -> fp16: one IEEE rounding
    parts = [_HEADER.pack(FORMAT_VERSION, k, projections, index_width, n)]
    idx_le = idx.numpy().astype("<u2" if index_width == 2 else "<u4")
    v = vals16.numpy().astype("<f2")
    p = np.clip(proj.numpy(), -65504.0, 65504.0).astype("<f2")  # float64 -> fp16: one IEEE rounding
    for row in range(n):
        parts.append(idx_le[row].tobytes() + v[row].tobytes() + p[row].tobytes())
    return b"".join(parts)


def make_fingerprints(
    outputs: Sequence[torch.Tensor], k: int = DEFAULT_TOP_K, projections: int = DEFAULT_PROJECTIONS
) -> list[bytes]:
    """`[make_fingerprint(o, k, projections) for o in outputs]`, bit for bit, taken together when every output
    is one position of the same width (the decode steps of a batch): a fingerprint of hidden states costs
    mostly per call, so 16 steps pay it once (~8x less). Rows go together up to `BATCH_VALUES` values (what
    stays in cache: a vocabulary of logits gains nothing from it and goes one row at a time)."""
    rows = [_rows(o) for o in outputs]
    if len(rows) < 2 or any(r.shape != rows[0].shape or r.shape[0] != 1 for r in rows):
        return [make_fingerprint(o, k, projections) for o in outputs]
    chunk = max(1, BATCH_VALUES // int(rows[0].shape[1]))
    found: list[bytes] = []
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        if len(part) == 1:
            found.append(make_fingerprint(part[0], k, projections))
            continue
        together = make_fingerprint(torch.cat(part), k, projections)  # one fingerprint of len(part) positions
        per = (len(together) - _HEADER.size) // len(part)
        version, k_, m, index_width, _ = _HEADER.unpack_from(together)
        header = _HEADER.pack(version, k_, m, index_width, 1)
        body = together[_HEADER.size :]
        found += [header + body[i * per : (i + 1) * per] for i in range(len(part))]
    return found


def parse_fingerprint(data: bytes) -> Fingerprint:
    """Decode fingerprint bytes; raises FingerprintError on a wrong version or length."""
    if len(data) < _HEADER.size:
        raise FingerprintError(f"a fingerprint has at least {_HEADER.size} bytes, got {len(data)}")
    version, k, m, index_width, n = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION or index_width not in (2, 4) or k == 0:
        raise FingerprintError(
            f"unknown fingerprint format (version {version}, k {k}, index width {index_width})"
        )
    per = k * index_width + 2 * k + 2 * m
    if len(data) != _HEADER.size + n * per:
        raise FingerprintError(
            f"fingerprint of {n} positions must be {_HEADER.size + n * per} bytes, got {len(data)}"
        )
    body = np.frombuffer(data, dtype=np.uint8, offset=_HEADER.size).reshape(n, per)
    ib = k * index_width
    idx = body[:, :ib].copy().view("<u2" if index_width == 2 else "<u4").astype(np.int64)
    vals = body[:, ib : ib + 2 * k].copy().view("<f2").astype(np.float32)
    proj = body[:, ib + 2 * k :].copy().view("<f2").astype(np.float32)
    return Fingerprint(torch.from_numpy(idx), torch.from_numpy(vals), torch.from_numpy(proj))


def position_distances(committed: Fingerprint, reference: torch.Tensor) -> torch.Tensor:
    """Per position, the distance (see the module docstring) of a committed fingerprint from the
    verifier's own output for the same positions ([1, n, d] or [n, d]); inf where not comparable."""
    rows = _rows(reference)
    n, width = rows.shape
    if n != committed.positions:
        raise FingerprintError(
            f"the fingerprint covers {committed.positions} positions, the recomputed step {n}"
        )
    k = committed.indices.shape[1]
    if int(committed.indices.max()) >= width:
        return torch.full((n,), math.inf)
    rms = rows.pow(2).mean(dim=1).sqrt().clamp_min(1e-30)
    ref_vals = torch.gather(rows, 1, committed.indices)
    scale = torch.maximum(ref_vals.abs(), rms.unsqueeze(1))
    value_err = ((committed.values - ref_vals).abs() / scale).amax(dim=1)
    kth = torch.topk(rows.abs(), k, dim=1).values[:, k - 1]
    index_gap = ((kth.unsqueeze(1) - ref_vals.abs()).clamp_min(0) / rms.unsqueeze(1)).amax(dim=1)
    dist = torch.maximum(value_err, index_gap)
    m = committed.projections.shape[1]
    if m:
        ref_proj = _project(rows, m)
        proj_err = ((committed.projections - ref_proj).abs() / rms.unsqueeze(1)).amax(dim=1)
        dist = torch.maximum(dist, proj_err)
    dist = torch.where(torch.isfinite(dist), dist, torch.full_like(dist, math.inf))
    return dist.to(torch.float64)


def fingerprint_distance(data: bytes, reference: torch.Tensor) -> float:
    """The distance of one step: the largest over its positions (inf if the bytes are malformed)."""
    try:
        committed = parse_fingerprint(data)
        return float(position_distances(committed, reference).max())
    except FingerprintError:
        return math.inf


def fingerprint_hash(data: bytes) -> bytes:
    """keccak256 of the fingerprint bytes."""
    return keccak(bytes(data))


def io_hash(input_hash: bytes, output_hash: bytes) -> bytes:
    """keccak256(input_hash || output_hash): one step's received and sent frames (their step hashes), so that a
    worker's leaf binds what it was given as well as what it sent; a verifier handed the inputs rebuilds the
    leaves and knows they are the accused's own (nobody can frame it with other inputs)."""
    if len(input_hash) != 32 or len(output_hash) != 32:
        raise ValueError(f"step hashes are 32 bytes, got {len(input_hash)} and {len(output_hash)}")
    return keccak(bytes(input_hash) + bytes(output_hash))


def leaf(step_bytes_hash: bytes, fingerprint: bytes) -> bytes:
    """The Merkle leaf of one step: keccak256(step_hash || keccak256(fingerprint)), 32 bytes.

    `step_bytes_hash` is `shardnet.wire.commitment.step_hash` of the frame sent (a worker passes `io_hash` of
    the frame received and the frame sent); the leaves go into
    `shardnet.wire.commitment.merkle_root` in step order. A proof of one step reveals the step hash and
    the fingerprint, whose hash the verifier recomputes.
    """
    if len(step_bytes_hash) != 32:
        raise ValueError(f"a step hash is 32 bytes, got {len(step_bytes_hash)}")
    return keccak(bytes(step_bytes_hash) + fingerprint_hash(fingerprint))
