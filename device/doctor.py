"""`allscope doctor` (being built; see issue 5)."""


def register_command(sub) -> None:
    """Add `allscope doctor` to the top-level subparsers."""
