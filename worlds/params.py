"""World parameters: one declaration per numeric parameter, and the validation that turns a
user's overrides into a fully resolved parameter dict (unknown names and bad values are
errors that name the field)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, SupportsInt, cast

from worlds.errors import SpecError, UnknownParameter


@dataclass(frozen=True)
class Param:
    """One overridable numeric parameter of a world.

    `low` / `high` are inclusive bounds unless `low_open` (then `value > low` is required).
    """

    name: str
    default: float | int
    doc: str
    integer: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def validate(self, value: Any) -> float | int:
        """The value as int / float, or SpecError naming this parameter."""
        kind = "an integer" if self.integer else "a number"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise SpecError(self.name, f"must be {kind}, got {value!r}")
        if self.integer:
            if isinstance(value, numbers.Integral):
                value = int(value)
            elif math.isfinite(float(value)) and float(value).is_integer():
                value = int(cast(SupportsInt, value))  # 64.0 from a JSON / YAML float is still 64
            else:
                raise SpecError(self.name, f"must be {kind}, got {value!r}")
        else:
            value = float(value)
            if not math.isfinite(value):
                raise SpecError(self.name, f"must be finite, got {value!r}")
        if self.low is not None:
            if self.low_open and not value > self.low:
                raise SpecError(self.name, f"must be > {self.low}, got {value!r}")
            if not self.low_open and not value >= self.low:
                raise SpecError(self.name, f"must be >= {self.low}, got {value!r}")
        if self.high is not None and not value <= self.high:
            raise SpecError(self.name, f"must be <= {self.high}, got {value!r}")
        return value


def resolve_params(
    world_id: str, params: tuple[Param, ...], overrides: Mapping[str, Any]
) -> dict[str, float | int]:
    """Defaults updated by `overrides`, every value validated; insertion order = declaration order."""
    by_name = {p.name: p for p in params}
    for name in overrides:
        if name not in by_name:
            raise UnknownParameter(
                name, f"unknown parameter of world {world_id!r}; valid: {list(by_name)}"
            )
    return {p.name: p.validate(overrides.get(p.name, p.default)) for p in params}


def check_count(name: str, value: Any, minimum: int = 1) -> int:
    """An integer count (n_train, n_eval, seed) >= `minimum`, or SpecError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SpecError(name, f"must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise SpecError(name, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)


# Shared declarations (the same name means the same thing in every world).
def seq_len(default: int) -> Param:
    return Param("T", default, "sequence length (time steps)", integer=True, low=2)


def noise_std(name: str, default: float, doc: str) -> Param:
    return Param(name, default, doc, low=0.0)


def probability(name: str, default: float, doc: str) -> Param:
    return Param(name, default, doc, low=0.0, high=1.0)
