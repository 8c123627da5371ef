"""The JSON API under /api/: one blueprint (``base.bp``), its routes in one module per area."""

from webui.api import captures, patients, review  # noqa: F401  (each adds its routes to bp)
from webui.api.base import bp

__all__ = ["bp"]
