"""Prediction with saved model files (SPEC §5).

The predictor kinds register themselves with :meth:`segfew.inference.predictor.Predictor.open`
as they are defined; importing them here means every kind is known whichever module of the
package is imported first (as timm's ``models/__init__`` does for ``create_model``).
"""

from segfew.inference import classify, segment  # noqa: F401  (they register their kinds)
