"""The error every command turns into one line and exit status 2: a config value that is not allowed.

It lives below everything (``interp.config`` re-exports it) so that the registries and the model
families, which the config asks, can raise it without importing the config.
"""


class ConfigError(ValueError):
    """A config field holds a value that is not allowed; the message names the field."""
