"""The one error taxonomy of worldsweep.

It lives in the lowest layer (`worlds`) so that every package can raise it without
importing anything above itself; `service.errors` re-exports it and is the one place that
maps it to HTTP status codes. Messages always name the offending field.
"""

from __future__ import annotations


class WorldsweepError(Exception):
    """Base class of every error worldsweep raises on purpose."""


class SpecError(WorldsweepError, ValueError):
    """A value supplied by the user is invalid. `field` names where it is (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"`{field}`: {message}" if field else message)

    def __reduce__(self) -> tuple:
        # Errors cross process boundaries (Ray workers, the server's worker processes);
        # the default reduce would call __init__ with the formatted message only.
        return (self.__class__, (self.field, self.message))


class UnknownWorld(SpecError):
    """A world id that is not registered."""


class UnknownParameter(SpecError):
    """A world / config parameter name that does not exist."""


class LimitExceeded(SpecError):
    """A value above a configured server limit (seed-runs, steps, T, n_train, ...)."""


class ExperimentNotFound(WorldsweepError, LookupError):
    """No experiment with that id."""

    def __init__(self, experiment_id: str) -> None:
        self.experiment_id = experiment_id
        super().__init__(f"experiment {experiment_id!r} not found")

    def __reduce__(self) -> tuple:
        return (self.__class__, (self.experiment_id,))


class StoreError(WorldsweepError):
    """The result store cannot be used as configured (unreachable, node-local on a cluster, ...)."""


class ClusterError(WorldsweepError):
    """Ray cluster configuration problem (cannot connect, no GPUs for a GPU spec, ...)."""
