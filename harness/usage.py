"""The user-error type every command raises: printed as one line by :mod:`harness.cli`, exit status 2."""

from __future__ import annotations


class CliError(Exception):
    """A user error (bad option, missing file): printed as ``harness CMD: error: MESSAGE``, exit status 2."""
