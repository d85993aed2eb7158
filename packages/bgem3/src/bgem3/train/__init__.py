"""Fine-tuning of BGE-M3: dense, sparse and ColBERT together, with self-distillation.

``finetune(FinetuneSettings(...))`` (or ``bgem3 finetune``) trains on FlagEmbedding's JSONL
with transformers' ``Trainer``; :func:`m3_loss` is the loss as a pure function of the three
representations; :func:`mine_negatives` (``bgem3 mine-negatives``) adds hard negatives.

Importing this package imports no torch: the loss and its types load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bgem3.errors import TrainingDivergedError
from bgem3.train.finetuning import finetune
from bgem3.train.mining import mine_negatives
from bgem3.train.settings import HEADS, FinetuneSettings, read_settings

if TYPE_CHECKING:
    from bgem3.train.loss import LossOutput, Representations, m3_loss

__all__ = [
    "HEADS",
    "FinetuneSettings",
    "LossOutput",
    "Representations",
    "TrainingDivergedError",
    "finetune",
    "m3_loss",
    "mine_negatives",
    "read_settings",
]


def __getattr__(name: str) -> object:
    # the loss needs torch: import it on first use, not with the settings the CLI reads
    if name in ("LossOutput", "Representations", "m3_loss"):
        from bgem3.train import loss

        return getattr(loss, name)
    raise AttributeError(f"module 'bgem3.train' has no attribute {name!r}")
