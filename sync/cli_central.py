"""CLI commands of allscope sync (being built; see issue 4)."""


def register(group: str, commands) -> None:
    """Add this module's subcommands of `allscope <group> ...` (group: central | device | sync)."""
