"""The one exception type for mistakes a user can fix.

The CLI prints a UserError as a single line (no traceback unless ``--debug``) and exits non-zero.
Its message names the file, line or config key at fault and says what to do.
"""


class UserError(Exception):
    """Bad input: a missing file, a malformed corpus, an invalid config value, ..."""
