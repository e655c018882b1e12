"""The root of shardnet's exceptions. Every error a user can meet derives from ShardnetError."""

from __future__ import annotations


class ShardnetError(Exception):
    """Base class of every shardnet error; the message says what went wrong and what to do next."""


class ConfigError(ShardnetError, ValueError):
    """A setting is missing or invalid."""


class IntegrityError(ShardnetError, ValueError):
    """Content did not match its content identifier (CID) or declared size."""


class WireError(ShardnetError, ValueError):
    """A tensor frame or request on the wire is malformed."""
