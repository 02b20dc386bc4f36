"""One exception type for every user-facing failure: the CLI prints its message, exits non-zero."""


class WoofError(Exception):
    """A problem the user can fix (bad path, bad config, missing weights); the message says how."""
