"""The asyncio client (placeholder, filled in below)."""

from __future__ import annotations


class AsyncClient:
    """Placeholder."""
