"""`make demo` picks BAAI/bge-m3 when cached or reachable, else falls back at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "demo_model.py"


def _pick(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", str(tmp_path / "tiny")],
        env={**base, "HF_HUB_CACHE": str(tmp_path / "hub"), **env},
        capture_output=True, text=True, check=True, timeout=120,
    )


def test_unreachable_hub_falls_back_to_the_tiny_checkpoint_at_once(tmp_path: Path) -> None:
    done = _pick(tmp_path, HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens there
    assert done.stdout.strip() == str(tmp_path / "tiny")
    assert (tmp_path / "tiny" / "config.json").is_file()
    assert len(done.stderr.strip().splitlines()) == 1
    assert "rankings are random" in done.stderr


def test_cached_bge_m3_is_used_offline(tmp_path: Path, tiny_path: Path) -> None:
    repo = tmp_path / "hub" / "models--BAAI--bge-m3"
    snapshot = repo / "snapshots" / "0123abcd"
    shutil.copytree(tiny_path, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    done = _pick(tmp_path, HF_HUB_OFFLINE="1")
    assert Path(done.stdout.strip()) == snapshot
    assert "from the Hugging Face cache" in done.stderr
    assert not (tmp_path / "tiny").exists()
