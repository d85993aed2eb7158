"""bgem3: BGE-M3 dense, sparse and ColBERT embeddings from one forward pass.

Example:
    >>> import bgem3
    >>> sorted(bgem3.__all__)[:3]
    ['BGEM3', 'BGEM3Error', 'CheckpointError']
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from bgem3._types import EncodeOutput, Encoder, Hit, SparseVector, sparse_to_csr
from bgem3.errors import (
    BGEM3Error,
    CheckpointError,
    CheckpointNotFoundError,
    CompileError,
    DatasetError,
    DatasetNotFoundError,
    HeadNotLoadedError,
    IndexFormatError,
    TruncationWarning,
)
from bgem3.evaluation import evaluate
from bgem3.index import HybridIndex
from bgem3.parallel import EncodePool
from bgem3.scoring import (
    colbert_scores,
    dense_scores,
    fuse_scores,
    lexical_matching_score,
    maxsim,
    sparse_scores,
)

try:
    __version__ = version("bgem3")
    """The installed version of ``bgem3`` (``"0.0.0"`` in an uninstalled source tree)."""
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = [
    "BGEM3",
    "BGEM3Error",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CompileError",
    "DatasetError",
    "DatasetNotFoundError",
    "EncodeOutput",
    "EncodePool",
    "Encoder",
    "HeadNotLoadedError",
    "Hit",
    "HybridIndex",
    "IndexFormatError",
    "SparseVector",
    "TruncationWarning",
    "__version__",
    "colbert_scores",
    "dense_scores",
    "evaluate",
    "fuse_scores",
    "lexical_matching_score",
    "maxsim",
    "sparse_scores",
    "sparse_to_csr",
]


def __getattr__(name: str) -> object:
    # BGEM3 pulls in torch and transformers: import it on first use, not at `import bgem3`.
    if name == "BGEM3":
        from bgem3.encoder import BGEM3

        return BGEM3
    raise AttributeError(f"module 'bgem3' has no attribute {name!r}")
