"""The error a user gets for a configuration the run cannot start with.

It lives in its own module, importing nothing from avssl, so that every part (the config schema,
the objective and backbone registries, the CLIs) can raise it without an import cycle.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A recipe or override the run cannot start with; the message names the key and the fix."""
