"""The one exception type users see.

Every problem caused by user input (a missing folder, a bad flag value, a weights file for the
wrong network) is raised as :class:`BpmError` with a single-line message naming the file or flag
and what was expected. The command-line front end prints it as ``error: <message>`` and exits
with status 2, so scripts can tell user errors from crashes (tracebacks, status 1).
"""


class BpmError(Exception):
    """A user-facing error whose message is one line naming the culprit and the expectation."""
