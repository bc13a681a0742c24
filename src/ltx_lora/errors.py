"""The two kinds of failure a command can end with.

`UserError` is bad input or configuration: the message is one sentence that says what is wrong and what to do,
and the CLI exits with status 2 without a traceback. Anything else is our failure (exit 1).
"""


class UserError(Exception):
    """Bad input: one clear sentence for the user, exit status 2."""

    exit_code = 2
