"""The two errors a setting can raise: missing (a required one is not set) and invalid (its value is refused)."""

from __future__ import annotations


class MissingSettingError(RuntimeError):
    """A required environment setting is not set."""

    def __init__(self, name: str, hint: str = ""):
        self.setting = name
        message = f"missing setting {name}: set the environment variable {name}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class InvalidSettingError(ValueError):
    """An environment setting has a value the pipeline cannot use; the message names the setting and the value
    (``value`` holds it, except for a secret, whose value is never repeated)."""

    def __init__(self, name: str, message: str, value: str | None = None):
        self.setting = name
        self.value = value
        super().__init__(message)
