"""Pure scheduling rules: synchronous successive halving, Hyperband, ASHA, asynchronous
Hyperband and PASHA. See :mod:`tuner.schedulers.base` for the contract."""

from tuner.schedulers.asha import Asha
from tuner.schedulers.base import Action, Finished, Promote, Scheduler, Snapshot, StartTrial, Wait
from tuner.schedulers.pasha import Pasha
from tuner.schedulers.rungs import hyperband_n, rung_levels, rung_sizes, s_max
from tuner.schedulers.successive_halving import SyncSuccessiveHalving

__all__ = [
    "Action",
    "Asha",
    "Finished",
    "Pasha",
    "Promote",
    "Scheduler",
    "Snapshot",
    "StartTrial",
    "SyncSuccessiveHalving",
    "Wait",
    "hyperband_n",
    "rung_levels",
    "rung_sizes",
    "s_max",
]
