"""Errors that pintor reports to people as one line."""


class PintorError(ValueError):
    """Bad input or a missing resource, with a message that says what was got and what is allowed.

    The CLI prints it as one line and exits non-zero; the server answers it with a 4xx JSON error.
    """


class ModelNotAvailableError(PintorError):
    """A model's weights are neither on disk nor reachable."""


class ModeNotSupportedError(PintorError):
    """The loaded model has no pipeline for the requested mode."""


class OutOfMemoryError(PintorError):
    """The device ran out of memory; the message suggests the low-memory modes."""
