"""The jobs: the only place where a run spec (pydantic) becomes objects.

One module per job — :mod:`~segfew.jobs.label`, :mod:`~segfew.jobs.pretrain`,
:mod:`~segfew.jobs.train_classifier` and the experiment's injected steps
(:mod:`~segfew.jobs.experiment_step`); :mod:`~segfew.jobs.common` holds what they share.
Below them the library takes plain typed arguments. (Nothing is re-exported here, so
``segfew.jobs.pretrain`` is always the module; ``segfew.pretrain`` is the job.)
"""
