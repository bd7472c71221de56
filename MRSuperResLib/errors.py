"""The one exception type that reaches users as a single clear line."""


class MRSuperResError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class Cancelled(MRSuperResError):
    """The user asked to stop; nothing was written."""

    def __init__(self, message: str = "cancelled by the user; nothing was written"):
        super().__init__(message)
