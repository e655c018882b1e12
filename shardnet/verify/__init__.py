"""Verification of committed work: step fingerprints, one-pass checks of a hop, seeded sampling, tolerances.

    fp = make_fingerprint(output)                      # per step, by the worker
    leaves.append(leaf(step_hash(frame), fp))          # Merkle leaf (shardnet.wire.commitment)
    verdict = check_hop(block, inputs, fps, tolerance_for("bfloat16"), tokens=...)  # by a verifier

Modules: fingerprint (format, distance, leaf), check (one-pass recomputation and verdict), sampler
(the job's seeded sampler and the token rules), tolerance (calibrated per dtype pair). No role imports.
"""
