"""Errors a user can act on. Their str() is one clear line; the CLI prints it without a traceback.

One hierarchy for every domain error. A service raises an error of one of the
kinds below (or of a class deriving from one), never an HTTP status: the web
layer maps the kind to its status in one place (``webui/kit/errors.py``):

    InvalidInput 400 · UnsupportedMedia 415 · Forbidden 403 · NotFound 404 · Conflict 409 · Unavailable 503
    · InsufficientStorage 507

A bare :class:`AllscopeError` (a broken model file, an unreadable data
directory) is not a request's fault: a page that meets one shows the
"something went wrong" line (500) unless it handles it itself.
"""


class AllscopeError(Exception):
    """Base for errors shown to users as one line."""


class InvalidInput(AllscopeError):
    """The request cannot be used as sent (a bad value, a malformed body): correct it and send again."""


class UnsupportedMedia(InvalidInput):
    """A file that is not of a kind this device reads (not an image, corrupt, hostile)."""


class Forbidden(AllscopeError):
    """The actor may not do this."""


class NotFound(AllscopeError):
    """The record asked for does not exist (or no longer can be reached this way)."""


class Conflict(AllscopeError):
    """The request is well-formed but refused by the state of the records (already signed, duplicate, last admin)."""


class Unavailable(AllscopeError):
    """A device resource the request needs is not there now (no camera running); try again later."""


class InsufficientStorage(Unavailable):
    """The data disk has no room for this without eating into the database's reserve: free space first."""


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
