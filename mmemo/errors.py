"""The exceptions mmemo raises for problems a user can fix; the CLI prints them as one line."""


class MmemoError(Exception):
    """Base class: the message says what was wrong, where, and what to do."""


class ConfigError(MmemoError, ValueError):
    """A config file or override has an unknown key, a wrong type or an invalid value."""


class DataError(MmemoError, ValueError):
    """A manifest, audio file or text input cannot be used."""


class ModelLoadError(MmemoError, OSError):
    """A model folder is missing a file or was written by an incompatible version."""
