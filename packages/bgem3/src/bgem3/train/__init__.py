"""Fine-tuning of BGE-M3: dense, sparse and ColBERT together, with self-distillation.

``finetune(FinetuneSettings(...))`` (or ``bgem3 finetune``) trains on FlagEmbedding's JSONL
with transformers' ``Trainer``; :func:`m3_loss` is the loss as a pure function of the three
representations; :func:`mine_negatives` (``bgem3 mine-negatives``) adds hard negatives.
"""

from __future__ import annotations

from bgem3.train.loss import HEADS, LossOutput, Representations, m3_loss
from bgem3.train.mining import mine_negatives
from bgem3.train.trainer import FinetuneSettings, finetune, read_settings

__all__ = [
    "HEADS",
    "FinetuneSettings",
    "LossOutput",
    "Representations",
    "finetune",
    "m3_loss",
    "mine_negatives",
    "read_settings",
]
