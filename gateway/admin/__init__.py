"""
The admin site: the REST API (L{gateway.admin.api}), the web UI and metrics.
"""

from __future__ import annotations

from gateway.admin.api import AdminAPI, APIError

__all__ = ["AdminAPI", "APIError"]
