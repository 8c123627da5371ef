"""Errors a user can act on. Their str() is one clear line; the CLI prints it without a traceback."""


class AllscopeError(Exception):
    """Base for errors shown to users as one line."""


class ImageLoadError(AllscopeError):
    """A file could not be read as an image (missing, unreadable, hostile, too large)."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelLoadError(AllscopeError):
    """The model file is missing, corrupt or not an allscope model."""


class ConfigError(AllscopeError):
    """A setting cannot be used (configuration file, sync settings); one line per problem, naming the key."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))
