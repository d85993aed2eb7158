"""The public surface is pinned: a change here is a deliberate API change."""

from __future__ import annotations

import subprocess
import sys

import bgem3


def test_core_all_is_pinned() -> None:
    assert sorted(bgem3.__all__) == sorted([
        "BGEM3", "BGEM3Error", "CheckpointError", "CheckpointNotFoundError", "CompileError",
        "DatasetError", "DatasetNotFoundError", "EncodeOutput", "EncodePool", "Encoder",
        "HeadNotLoadedError", "Hit",
        "HybridIndex", "IndexFormatError", "SparseVector", "TruncationWarning", "__version__",
        "colbert_scores", "dense_scores", "evaluate", "fuse_scores", "lexical_matching_score",
        "maxsim", "sparse_scores", "sparse_to_csr",
    ])
    for name in bgem3.__all__:
        assert getattr(bgem3, name) is not None


def test_index_all_is_pinned() -> None:
    import bgem3.index

    assert sorted(bgem3.index.__all__) == sorted([
        "DEFAULT_SEARCH", "HybridIndex", "QdrantHybridIndex", "SearchIndex", "SearchOptions",
        "is_saved_index", "read_manifest",
    ])


def test_importing_bgem3_does_not_import_torch() -> None:
    code = "import sys, bgem3; print('torch' in sys.modules, 'transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["False", "False"]

