"""Print the checkpoint `make demo` runs on, and say why on stderr.

BAAI/bge-m3 when it is in the Hugging Face cache (its local snapshot, so nothing touches the
network) or when the hub answers within a few seconds (downloaded once, about 2.3 GB);
otherwise a tiny random checkpoint built in ``--tiny DIR``, whose rankings are random.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from bgem3.errors import BGEM3Error

REAL = "BAAI/bge-m3"


def cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot of ``repo_id`` with every file BGE-M3 needs, or ``None``."""
    from bgem3.checkpoint import resolve_checkpoint

    try:
        return resolve_checkpoint(repo_id, local_files_only=True).path
    except BGEM3Error:
        return None


def hub_reachable(repo_id: str, timeout: float) -> bool:
    """Whether the hub answers for ``repo_id`` within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    from huggingface_hub import constants

    request = urllib.request.Request(f"{constants.ENDPOINT}/api/models/{repo_id}", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", type=Path, required=True, help="where to build the fallback")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the hub")
    args = parser.parse_args()

    snapshot = cached_snapshot(REAL)
    if snapshot is not None:
        print(f"make demo: {REAL} from the Hugging Face cache", file=sys.stderr)
        print(snapshot)
    elif hub_reachable(REAL, args.timeout):
        print(f"make demo: {REAL} from the hub (downloaded once, about 2.3 GB)", file=sys.stderr)
        print(REAL)
    else:
        from bgem3.testing import build_tiny_checkpoint

        if not (args.tiny / "config.json").is_file():
            build_tiny_checkpoint(args.tiny)
        print(f"make demo: {REAL} is not cached and the hub cannot be reached, so this runs on "
              "a tiny random checkpoint and its rankings are random (BGEM3_MODEL=... picks a "
              "model)", file=sys.stderr)
        print(args.tiny)


if __name__ == "__main__":
    main()
