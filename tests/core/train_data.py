"""What the fine-tuning tests share: a JSONL writer and the small run they start from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bgem3.train import FinetuneSettings


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def small_run(model: Path, data: Path, out: Path, **changes: Any) -> FinetuneSettings:
    """Eight steps of groups of 4 on the CPU, a loss logged every 2 steps, unless changed."""
    settings: dict[str, Any] = {
        "model": str(model), "train_data": [str(data)], "output": str(out), "group_size": 4,
        "batch_size": 8, "max_steps": 8, "logging_steps": 2, "learning_rate": 1e-3,
        "device": "cpu", "show_progress": False}
    settings.update(changes)
    return FinetuneSettings(**settings)
