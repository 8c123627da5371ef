"""CLI commands (being built; see issue 5)."""


def register(group: str, commands) -> None:
    """Add this module's subcommands of `allscope <group> ...`."""
