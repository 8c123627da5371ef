"""JSON API: captures (being built; see issue 3)."""

from webui.api import bp  # noqa: F401
