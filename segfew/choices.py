"""The named choices of segfew's options, as ``Literal`` types that Typer, pydantic and mypy
all read. No imports beyond ``typing``, so the CLI can use them without loading anything."""

from typing import Literal

#: how networks compute (segfew.runtime): auto picks the fastest safe one for the machine
Precision = Literal["auto", "fp32", "bf16", "fp16"]
#: the learning rate over a training run: constant (the paper's Adam), or poly — lr ×
#: (1 − epoch / epochs)^0.9, set at the start of each epoch (nnU-Net's schedule)
LrSchedule = Literal["constant", "poly"]
#: the segmentation loss (segfew.train.loss): the paper's weighted cross entropy, or that
#: plus the soft Dice of the foreground labels over the batch (nnU-Net's)
SegLoss = Literal["weighted_ce", "dice_ce"]
#: intensity normalisation before the network grid (segfew.preprocess.grid, SPEC §5)
Intensity = Literal["clahe", "ct", "minmax", "zscore"]
#: how ``segfew label`` makes labels without an expert: k-means intensity clusters (the
#: paper's THRESHOLD, segfew.labelling.kmeans) or the cavities of cine cardiac MRI
#: (segfew.labelling.cavities)
LabelMethod = Literal["kmeans", "cavities"]
#: what a classifier learns from (docs/frameworks.md): the names of
#: ``segfew.frameworks.FRAMEWORKS``, in its order (a test keeps the two equal)
Framework = Literal["measures", "manual", "threshold", "scratch", "vgg"]
