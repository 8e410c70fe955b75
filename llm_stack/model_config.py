"""Typed access to a Triton model's `config.pbtxt` parameters.

Every parameter can be overridden by an environment variable `LLM_STACK_<NAME>`, so
one model repository serves the CPU default and a GPU deployment. A missing or
unfilled value (NVIDIA's templates leave `${name}` placeholders) fails model load
with a message naming the parameter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

ENV_PREFIX = "LLM_STACK_"


class ModelConfigError(ValueError):
    """A config.pbtxt parameter is missing, unfilled or malformed."""


class ModelParameters:
    """The `parameters` block of a model config, with env overrides."""

    def __init__(
        self,
        model_config: Mapping[str, Any],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.model_name = str(model_config.get("name", "?"))
        raw = model_config.get("parameters") or {}
        self._values: dict[str, str] = {
            key: str(value.get("string_value", "")) if isinstance(value, Mapping) else str(value)
            for key, value in raw.items()
        }
        self._environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> str:
        env_name = ENV_PREFIX + name.upper()
        if self._environ.get(env_name, "") != "":
            return self._environ[env_name]
        if name not in self._values:
            raise ModelConfigError(
                f"model '{self.model_name}': parameter '{name}' is missing from config.pbtxt "
                f"(or set {env_name})"
            )
        value = self._values[name].strip()
        if value == "" or value.startswith("${"):
            raise ModelConfigError(
                f"model '{self.model_name}': parameter '{name}' is not filled in "
                f"(value {value!r}; set it in config.pbtxt or {env_name})"
            )
        return value

    def get_str(self, name: str) -> str:
        """A string parameter."""
        return self._raw(name)

    def get_choice(self, name: str, choices: tuple[str, ...]) -> str:
        """A string parameter from a fixed set."""
        value = self._raw(name)
        if value not in choices:
            raise ModelConfigError(
                f"model '{self.model_name}': parameter '{name}' is {value!r}, "
                f"expected one of {', '.join(choices)}"
            )
        return value

    def get_int(self, name: str, minimum: int | None = None) -> int:
        """An integer parameter, optionally bounded below."""
        return int(self._number(name, int, "an integer", minimum))

    def get_float(self, name: str, minimum: float | None = None) -> float:
        """A float parameter, optionally bounded below."""
        return float(self._number(name, float, "a number", minimum))

    def get_fraction(self, name: str) -> float:
        """A fraction in (0, 1], e.g. a share of GPU memory."""
        value = self.get_float(name)
        if not 0.0 < value <= 1.0:  # written this way round, it refuses nan too
            raise ModelConfigError(
                f"model '{self.model_name}': parameter '{name}' must be in (0, 1], got {value}"
            )
        return value

    def _number(
        self, name: str, cast: type[int] | type[float], kind: str, minimum: float | None
    ) -> float:
        value = self._raw(name)
        try:
            number = cast(value)
        except ValueError:
            raise ModelConfigError(
                f"model '{self.model_name}': parameter '{name}' must be {kind}, got {value!r}"
            ) from None
        if minimum is not None and number < minimum:
            raise ModelConfigError(
                f"model '{self.model_name}': parameter '{name}' must be >= {minimum}, got {number}"
            )
        return number

    def get_bool(self, name: str) -> bool:
        """A boolean parameter (true/false, 1/0, yes/no)."""
        value = self._raw(name).lower()
        if value in ("true", "1", "yes"):
            return True
        if value in ("false", "0", "no"):
            return False
        raise ModelConfigError(
            f"model '{self.model_name}': parameter '{name}' must be true or false, got {value!r}"
        )
