"""The error of a training run that stopped because its numbers stopped being finite."""

from __future__ import annotations

from bgem3.errors import BGEM3Error

__all__ = ["TrainingDivergedError"]


class TrainingDivergedError(BGEM3Error, FloatingPointError):
    """The loss, a gradient or a weight became NaN or infinite: the run stopped there.

    Nothing from the step that diverged is logged or saved; the checkpoints saved before it
    hold finite weights.
    """
