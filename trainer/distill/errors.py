"""The one error a user can fix by changing the command line; the CLI prints it as `error: ...` and exits with 2."""


class UsageError(Exception):
    pass
