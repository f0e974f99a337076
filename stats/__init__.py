"""Statistics of per-seed results (SCIENCE.md §4-5): pure numpy/scipy, no torch.

Every function validates its inputs (errors are `SpecError`s naming the argument), takes an
explicit `rng` where it resamples (None means the fixed seed 0, so reports reproduce), and
returns a small frozen dataclass. `stats.report` turns result tables into the service's
JSON rows.
"""

from stats.effect import (
    EffectSize,
    WelchResult,
    effect_size,
    seeds_for_power,
    t_test_power,
    welch_test,
)
from stats.intervals import Interval, bootstrap_interval, t_interval
from stats.lyapunov import kaplan_yorke_dimension, lyapunov_spectrum  # engineer D's module
from stats.multiple import benjamini_hochberg, holm
from stats.permutation import (
    SignFlipResult,
    TwoSampleResult,
    sign_flip_test,
    two_sample_permutation_test,
)
from stats.summary import GroupSummary, summarise_group

__all__ = [
    "EffectSize",
    "GroupSummary",
    "Interval",
    "SignFlipResult",
    "TwoSampleResult",
    "WelchResult",
    "benjamini_hochberg",
    "bootstrap_interval",
    "effect_size",
    "holm",
    "kaplan_yorke_dimension",
    "lyapunov_spectrum",
    "seeds_for_power",
    "sign_flip_test",
    "summarise_group",
    "t_interval",
    "t_test_power",
    "two_sample_permutation_test",
    "welch_test",
]
