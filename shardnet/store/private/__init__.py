"""Private data: files encrypted with a fresh AES-256-GCM key each, erasure-coded into n pieces (any k rebuild),
pieces spread over storage nodes, keys wrapped only to the workers the chain names (design in docs/storage.md)."""
