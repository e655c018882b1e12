"""Fixtures (placeholder until filled in)."""
