"""The one exception type that means "the user gave us something wrong"."""

import click


class UserError(click.ClickException):
    """A mistake in the user's input: a missing file, a malformed spec, an index out of range.

    Raised anywhere below a command, it reaches the user as one line
    (``Error: <message>``) and a non-zero exit, never as a traceback.
    A bug in our own code must not be reported this way.
    """

    exit_code = 2
