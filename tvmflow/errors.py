"""The one error type users see.

Every mistake a user can make (a bad name, a malformed file, a missing tool) is raised as
:class:`TvmflowError`.  ``tvmflow.cli.main`` catches it once, prints ``Error: <message>`` on
stderr and exits with :data:`EXIT_USER_ERROR`.  Anything else is a bug and keeps its traceback.
"""

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class TvmflowError(Exception):
    """A user-facing error: one line, no traceback."""

    exit_code = EXIT_USER_ERROR

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")

    def __str__(self) -> str:  # one line, always
        text = self.message if self.hint is None else f"{self.message}. Hint: {self.hint}"
        return " ".join(text.split("\n"))
