"""Errors an operator fixes: each is shown as one line, `wa-gateway: error: <message>`,
with exit status 2 and no traceback.

They live here, below every other module, so a command anywhere in the package can
raise them without importing the command line (which imports everything).
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake or a situation the user can act on; the message says what to change."""


class ConfigError(UserError):
    """A setting is missing or wrong; the message is one line an operator can act on."""
