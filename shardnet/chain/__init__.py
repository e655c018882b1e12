"""The chain side of shardnet: typed bindings of the ShardRegistry contract and everything around them.

- `registry.Registry`: one method per contract function, dataclasses out, reverts as `errors.ContractRevert`.
- `deploy`: `deploy_registry(w3, account, params)` and the deployment file (`load_deployment`).
- `devnet.Devnet`: a local anvil or hardhat node; `devnet.DEV_KEYS`: its funded dev keys.
- `tx`: EIP-1559 sending, receipts, and a per-account nonce manager safe across threads.
- `watcher.EventWatcher`: polls registry events into handlers with a durable cursor in the database.
- `artifacts`: the committed ABI and bytecode; `compile`: rebuilds them from contracts/.
"""
