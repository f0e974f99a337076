"""The error taxonomy (defined in `worlds.errors`, the lowest layer) as the service sees it.
`service.api.errors` is the one place that maps these to HTTP status codes."""

from worlds.errors import (  # noqa: F401
    ClusterError,
    ExperimentNotFound,
    LimitExceeded,
    SpecError,
    StoreError,
    UnknownParameter,
    UnknownWorld,
    WorldsweepError,
)
