"""How a run ends: the one exception type that reaches users as a single clear line, the OSErrors
that are the machine's rather than a bug, and the exit statuses every entry point (the CLI, a
training, a Slicer job's child) uses."""
import errno

# done; an unexpected internal error (or a batch with failed inputs); a problem explained in one
# line; a training stopped gracefully; Ctrl-C; SIGTERM (what schedulers and `kill` send)
EXIT_DONE, EXIT_INTERNAL, EXIT_ERROR, EXIT_STOPPED, EXIT_CANCELLED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143

# OSErrors that say something about the machine or the path, not about MRSuperRes: one line, EXIT_ERROR
ENVIRONMENT_ERRORS = {getattr(errno, name): text for name, text in (
    ("ENOSPC", "the disk is full"), ("EDQUOT", "the disk quota is exceeded"),
    ("ENAMETOOLONG", "a file name is too long"), ("EROFS", "the file system is read-only"),
    ("EACCES", "permission denied"), ("EPERM", "not permitted"), ("EMFILE", "too many open files"),
    ("EIO", "an input/output error (a failing disk or network share?)")) if hasattr(errno, name)}


class MRSuperResError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class SlicesTooSmall(MRSuperResError):
    """A scan's slices are smaller than the scale needs (a model's report skips such a scan)."""


class Cancelled(MRSuperResError):
    """The user asked to stop; nothing was written."""

    def __init__(self, message: str = "cancelled by the user; nothing was written"):
        super().__init__(message)


class Terminated(BaseException):
    """SIGTERM, raised where the program is, so that the way out removes partial files as Ctrl-C's does."""


def environment_problem(exc: BaseException) -> str | None:
    """The one line for an OSError that is the machine's (a full disk, a name too long), else None."""
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRORS:
        return ENVIRONMENT_ERRORS[exc.errno] + (f": {exc.filename}" if exc.filename else "")
    return None
