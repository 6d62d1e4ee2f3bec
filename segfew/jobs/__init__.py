"""The jobs: the only place where a run spec (pydantic) becomes objects.

One module per job — :mod:`~segfew.jobs.label`, :mod:`~segfew.jobs.pretrain`,
:mod:`~segfew.jobs.train_classifier` and the experiment's injected steps
(:mod:`~segfew.jobs.experiment_step`); :mod:`~segfew.jobs.common` holds what they share.
Below them the library takes plain typed arguments.
"""

from segfew.jobs.common import run_dir_for
from segfew.jobs.pretrain import PretrainResult, pretrain
from segfew.jobs.train_classifier import ClassifierResult, train_classifier

__all__ = ["ClassifierResult", "PretrainResult", "pretrain", "run_dir_for", "train_classifier"]
