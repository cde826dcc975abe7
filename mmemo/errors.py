"""The exceptions mmemo raises for problems a user can fix; the CLI prints them as one line."""


class MmemoError(Exception):
    """Base class: the message says what was wrong, where, and what to do."""


class ConfigError(MmemoError, ValueError):
    """A config file or override has an unknown key, a wrong type or an invalid value."""


class DataError(MmemoError, ValueError):
    """A manifest, audio file or text input cannot be used."""


class ModelLoadError(MmemoError, OSError):
    """A model folder is missing a file or was written by an incompatible version."""


def not_one_of(key: str, value, choices) -> ConfigError:
    """The error for a value outside its choices: names the key, the value and the choices, and the closest one."""
    import difflib

    choices = list(choices)
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{key} must be one of {', '.join(map(repr, choices))}, got {value!r}{hint}")
