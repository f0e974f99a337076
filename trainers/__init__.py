"""Training and evaluation of tiny recurrent networks, K seeds at once.

    rows = trainers.run_trial({"world": "E3_osc_struct", "steps": 2000}, seeds=[1234, 1235])

Public API: run_trial, run_packed, pack_key, resolve_device (trainers.trial); the cells
(trainers.cells), the loop (trainers.training), evaluation and probes
(trainers.evaluation, trainers.probe), the trial configuration and result columns
(trainers.config).
"""

from trainers.config import RESULT_COLUMNS, TrialConfig
from trainers.trial import pack_key, resolve_device, run_packed, run_trial

__all__ = ["RESULT_COLUMNS", "TrialConfig", "pack_key", "resolve_device", "run_packed", "run_trial"]
