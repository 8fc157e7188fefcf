"""Exceptions shared by every stage.

``InputError`` is raised for bad input at a boundary (CLI argument, config field, file):
the CLI turns it into one line on stderr and exit code 2.
"""


class InputError(ValueError):
    """Bad user input; the message names the value and what was expected."""
