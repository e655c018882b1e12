"""The worker HTTP protocol seen from its callers: `client.WorkerClient` and the typed `errors` both sides share.

The worker's server raises `shardnet.peer.errors` classes; the coordinator, the benchmarks and the tests talk to
workers through `shardnet.peer.client.WorkerClient`, so neither role imports the other.
"""
