"""The shardnet coordinator: routing, sessions with failover, verification, settlement, HTTP and OpenAI API."""
