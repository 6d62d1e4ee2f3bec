"""segfew: medical image classifiers from very few labels, using frozen features of a
segmentation network (Wong, Syeda-Mahmood and Moradi, Medical Image Analysis 2018).

The library is usable without the CLI; heavy modules (torch) are imported lazily by the
sub-modules that need them, so ``import segfew`` stays cheap.
"""

from segfew.errors import DataError, ModelFileError, SegfewError, SpecError

__version__ = "0.1.0"

__all__ = ["DataError", "ModelFileError", "SegfewError", "SpecError", "__version__"]
