"""The network dashboard: one read-only page showing coverage, nodes, jobs and money, live.

`shardnet.dashboard.snapshot.ChainSnapshot` folds the registry's events (incrementally, from the last block it
read) and views into one JSON snapshot; `shardnet.dashboard.web` serves the page, its assets and that snapshot
over aiohttp, mounted by the coordinator (which adds its own view of worker health and jobs) or standalone
(`shardnet dashboard`, chain data alone). The assets (`assets/`) are plain HTML, CSS and JavaScript shipped
with the package: no CDN, no build step.
"""
