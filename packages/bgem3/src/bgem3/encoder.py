"""``BGEM3``: load a checkpoint once, then encode texts into dense, sparse and ColBERT outputs.

This is the one place where tensors become numpy arrays, where the device and dtype
policy lives, and where inference runs (``eval()`` once at load, ``inference_mode``
around every forward, no casts or moves inside ``encode``). torch is imported only for
the torch backend: a model that runs in ONNX Runtime from a cached graph never loads it.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from bgem3._inputs import as_pairs, as_texts, positive_int
from bgem3._placement import (
    choose_backend,
    cpu_lacks_bf16,
    device_name,
    dtype_name,
    resolve_device,
    torch_dtype,
)
from bgem3._types import EncodeKeywords, EncodeOutput, Encoder, SparseVector
from bgem3.batching import (
    PACK_WIDTH,
    Batch,
    M3Tokenizer,
    Tokenized,
    cached_tokenizer,
    collate,
    collate_packed,
    lexical_weights,
    load_tokenizer,
    plan_batches,
    plan_packed,
    tokenize,
    tokenizer_entry,
    unique_texts,
)
from bgem3.checkpoint import (
    BACKENDS,
    DEFAULT_BACKEND,
    DEFAULT_MODEL,
    Checkpoint,
    fingerprint,
    load_config,
    resolve_checkpoint,
)
from bgem3.errors import (
    CompileError,
    HeadNotLoadedError,
    TruncationWarning,
    warn_each_call,
)
from bgem3.scoring import SCORE_MODES, fuse_scores, pair_scores

if TYPE_CHECKING:
    import torch
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

    from bgem3._onnx import OnnxModule
    from bgem3.model import BGEM3Module

__all__ = [
    "BGEM3",
    "EncodeStats",
    "load_model",
    "resolve_device",
]

_KEPT = (SCORE_MODES,)  # importable from here, where it was declared before bgem3.scoring
QUERY_MAX_LENGTH = 512
DOCUMENT_MAX_LENGTH = 8192

_PROGRESS_MIN_TOKENS = 100_000
_EMPTY_SPARSE = SparseVector(np.zeros(0, np.int64), np.zeros(0, np.float32))
_EMPTY_COLBERT = np.zeros((0, 0), np.float32)


@dataclass
class EncodeStats:
    """Where the time of the last encode call went (diagnostics for benchmarks).

    Attributes:
        texts: Texts encoded.
        tokens: Real (non-padding) tokens.
        computed_tokens: Tokens the forward passes computed, padding included.
        batches: Forward batches.
        tokenize_s: Seconds spent tokenizing.
        forward_s: Seconds in the model, device transfers included.
        postprocess_s: Seconds turning tensors into the outputs.
    """

    texts: int = 0
    tokens: int = 0
    computed_tokens: int = 0
    batches: int = 0
    tokenize_s: float = 0.0
    forward_s: float = 0.0
    postprocess_s: float = 0.0

    @property
    def padding_waste(self) -> float:
        """Fraction of computed tokens that were padding."""
        return 1.0 - self.tokens / self.computed_tokens if self.computed_tokens else 0.0


_ENCODE_OPTIONS = frozenset(EncodeKeywords.__annotations__)


def _known_options(options: Mapping[str, object], method: str) -> None:
    """Refuse a keyword no encode method takes, naming the method and the ones it takes."""
    unknown = sorted(set(options) - _ENCODE_OPTIONS)
    if unknown:
        raise TypeError(f"BGEM3.{method}() got unexpected keyword arguments {unknown}; it "
                        f"takes {sorted(_ENCODE_OPTIONS)}"
                        + ("" if method == "encode_queries" else " and mcls"))


class BGEM3:
    """BGE-M3: dense, sparse (lexical) and ColBERT outputs from one forward pass.

    Outputs equal FlagEmbedding's ``BGEM3FlagModel`` (fp32, same checkpoint) to 1e-5.

    Args:
        model: Hub id (``"BAAI/bge-m3"``) or a local checkpoint directory.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"xpu"``; ``None`` picks
            cuda, then mps, then cpu.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"`` or ``"int8"``; ``None`` means
            float16 on CUDA and float32 elsewhere. Outputs are float32 numpy arrays either
            way. ``"int8"`` (CPU, ONNX Runtime): the backbone's matrix products in int8
            (weights per output channel, activations with one scale per token), over twice
            as fast as float32 on single queries, dense cosine to float32 about 0.9996 on a
            trained model (see the performance page); its graph is made once from the
            float32 one and cached (minutes and about 6 GB of memory at BGE-M3's size).
        dense_only: Load the backbone alone, for checkpoints without head files; asking
            for sparse or ColBERT output then raises :class:`HeadNotLoadedError`.
        batch_tokens: Token budget of one forward batch (rows times longest row).
        max_padding: Largest fraction of a batch that may be padding. ``None``: 0 on
            CPU, where padding costs more than extra forward calls (only equal lengths
            share a batch), 0.1 on accelerators, which need wide batches.
        query_max_length: Default ``max_length`` of :meth:`encode_queries`; ``None``
            means 512 or the model's limit if lower.
        document_max_length: Default ``max_length`` of :meth:`encode_documents` and
            :meth:`encode`; ``None`` means 8192 or the model's limit if lower.
        revision: Hub branch, tag or commit.
        cache_dir: Hugging Face cache directory.
        token: Hub token for private repositories.
        local_files_only: Never use the network (``HF_HUB_OFFLINE=1`` does the same).
        compile: Compile the backbone with ``torch.compile`` (inductor, dynamic shapes,
            weights frozen as constants) while loading, for a single text and for batches,
            so that no encode call waits for it. On CPU this halves a single query's
            latency at BGE-M3's size; loading takes minutes longer (a C++ compiler is
            needed). Outputs equal the uncompiled model's to 1e-5. Needs torch 2.7 or later.
        backend: What runs the backbone: ``"auto"`` (ONNX Runtime on a CPU in float32 or
            int8 where onnxruntime is installed, torch everywhere else), ``"torch"`` or
            ``"onnx"``. For ONNX Runtime the backbone is exported on first use (seconds;
            about a minute at BGE-M3's size), its attention, GELU and LayerNorms fused by
            ONNX Runtime's transformer optimizer, and cached under bgem3's cache directory
            (``$BGEM3_CACHE_DIR``), so that later loads open the graph without reading the
            torch weights; outputs equal the torch backend's to 1e-5. ``"auto"`` falls back
            to torch, with a warning, where the export cannot be made or stored;
            ``backend`` says which one runs.

    Attributes:
        backend: ``"torch"`` or ``"onnx"``: what runs the backbone.
        device: The ``torch.device`` it runs on (torch is imported on first access).
        dtype: The compute ``torch.dtype`` (``torch.int8`` for int8; the same).
        last_stats: :class:`~bgem3.encoder.EncodeStats` of the calling thread's last encode
            call (time split, padding).

    Raises:
        CheckpointNotFoundError: Unknown path or hub id, or required files missing.
        CheckpointError: Files present but unusable (bad config, malformed heads).
        CompileError: ``compile=True`` and torch cannot compile the model here, or
            ``backend="onnx"`` (or ``dtype="int8"``) and the backbone cannot be exported
            or loaded.
        ModuleNotFoundError: ``backend="onnx"`` or ``dtype="int8"`` without onnxruntime
            or onnx installed.
        OSError: ``backend="onnx"`` (or ``dtype="int8"``) and bgem3's cache directory
            cannot hold the export (not writable, or full); the message names it.
        ValueError: A bad option value, or a device that this torch build or this
            machine lacks.
        TypeError: ``dense_only``, ``local_files_only`` or ``compile`` is not a bool.

    Example:
        >>> import tempfile, bgem3
        >>> from bgem3.testing import build_tiny_checkpoint
        >>> model = bgem3.BGEM3(build_tiny_checkpoint(tempfile.mkdtemp()), device="cpu")
        >>> out = model.encode_documents(["the city of paris"], dense=True, sparse=True,
        ...                              colbert=True)
        >>> out.dense.shape, out.colbert[0].shape, len(out.sparse)
        ((1, 32), (5, 32), 1)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        dense_only: bool = False,
        batch_tokens: int = 16384,
        max_padding: float | None = None,
        query_max_length: int | None = None,
        document_max_length: int | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        compile: bool = False,
        backend: str = DEFAULT_BACKEND,
    ) -> None:
        for flag, value in (("dense_only", dense_only), ("local_files_only", local_files_only),
                            ("compile", compile)):
            if not isinstance(value, (bool, np.bool_)):  # "yes" and 0 would pass for a bool
                raise TypeError(f"{flag} must be True or False, got {value!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be 'auto', 'torch' or 'onnx', got {backend!r}")
        int8 = dtype is not None and dtype_name(dtype, "cpu") == "int8"
        if backend == "onnx" or int8:  # ONNX Runtime runs on the CPU
            device = "cpu" if device is None else device
        positive_int(batch_tokens, "batch_tokens")
        if max_padding is not None and not 0.0 <= max_padding <= 1.0:
            raise ValueError(f"max_padding must be between 0 and 1, got {max_padding!r}")
        # settled by name: torch is imported only if the model runs in torch
        self._device = device_name(device)
        on_cpu = self._device.split(":")[0] == "cpu"
        self.max_padding = (0.0 if on_cpu else 0.1) if max_padding is None else max_padding
        self._dtype = dtype_name(dtype, self._device)
        self._torch: tuple[torch.device, torch.dtype] | None = None
        self.backend = choose_backend(backend, self._device, self._dtype, compile)
        if on_cpu and self._dtype == "bfloat16" and cpu_lacks_bf16():
            warnings.warn("bfloat16 on this CPU (no AVX512-BF16 or AMX) is emulated and "
                          "several times slower than float32: leave dtype at float32",
                          stacklevel=2)
        checkpoint = resolve_checkpoint(
            model,
            require_heads=not dense_only,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
        )
        self.name = checkpoint.name
        self._local = threading.local()
        self._fingerprint: str | None = None
        self.path = checkpoint.path
        entry = tokenizer_entry(checkpoint.path)
        parsed: list[M3Tokenizer | None] = []
        if entry is not None and entry.is_file():
            # parsed (holding the GIL) while ONNX Runtime builds its session (without it)
            self._module = self._load(checkpoint, dense_only, backend, lambda: parsed.append(
                cached_tokenizer(checkpoint.path, entry)))
        else:  # made for the first time: its errors come before any weights are read
            parsed.append(load_tokenizer(checkpoint.path))
            self._module = self._load(checkpoint, dense_only, backend)
        tokenizer = (parsed[0] if parsed else None) or load_tokenizer(checkpoint.path)
        self._tokenizer = tokenizer
        self._backend, self._spec = tokenizer.backend, tokenizer.spec
        self._config: Any = self._module.config
        config = self._config
        positions = int(config.max_position_embeddings)
        # XLM-R numbers a sequence's positions from its pad id + 1
        self._first_position = 0
        if getattr(config, "model_type", "") in ("xlm-roberta", "roberta"):
            self._first_position = int(config.pad_token_id) + 1
            positions -= self._first_position
        self.max_length = positions
        self.batch_tokens = batch_tokens
        self.query_max_length = self._check_max_length(
            min(QUERY_MAX_LENGTH, positions) if query_max_length is None else query_max_length
        )
        self.document_max_length = self._check_max_length(
            min(DOCUMENT_MAX_LENGTH, positions) if document_max_length is None
            else document_max_length
        )
        if compile:  # now, for one text, a batch (and a padded batch): no call waits for it
            self._torch_module().compile_now(self.tokenizer("bgem3 compiles this text")[
                "input_ids"], self.device, padded=self.max_padding > 0, name=self.name)
        # on a CPU, batches smaller than a packed row are packed (a forward call's fixed
        # cost outweighs padding's there); accelerators take wide padded batches instead
        self._packs = (on_cpu and self.backend == "torch" and self._torch_module().packs)
        self._pack_width = min(PACK_WIDTH, batch_tokens)

    def _load(self, checkpoint: Checkpoint, dense_only: bool, requested: str,
              meanwhile: Callable[[], object] | None = None) -> BGEM3Module | OnnxModule:
        """The network for ``self.backend``.

        For ONNX Runtime: the cached graph if there is one (no torch weights are read;
        ``meanwhile`` runs while its session is built), else the torch backbone, exported
        now (``"auto"`` falls back to torch if it cannot be).
        """
        from bgem3 import _onnx

        if self.backend == "onnx":
            int8 = self._dtype == "int8"
            cached = _onnx.cached_module(checkpoint, self.fingerprint, load_config(checkpoint),
                                         quantized=int8, dense_only=dense_only,
                                         meanwhile=meanwhile)
            if cached is not None:
                return cached
        from bgem3.model import load_module

        if self.backend == "torch":
            return load_module(checkpoint, device=self.device, dtype=self.dtype,
                               dense_only=dense_only)
        module = load_module(checkpoint, device=self.device, dtype=torch_dtype("float32"),
                             dense_only=True)
        try:
            return _onnx.onnx_module(checkpoint, module.backbone, self.fingerprint,
                                     quantized=int8, dense_only=dense_only)
        except (CompileError, OSError) as exc:
            if requested != DEFAULT_BACKEND or int8:
                raise
            warnings.warn(f"{self.name!r} runs in torch, not ONNX Runtime: {exc}", stacklevel=3)
            self.backend = "torch"
        from bgem3.model import with_heads

        return with_heads(checkpoint, module.backbone, dense_only=dense_only)

    @property
    def device(self) -> torch.device:
        """The ``torch.device`` the model runs on (``cpu`` for ONNX Runtime)."""
        return self._torch_placement()[0]

    @property
    def dtype(self) -> torch.dtype:
        """The compute ``torch.dtype`` (``torch.int8`` for ``dtype="int8"``)."""
        return self._torch_placement()[1]

    def _torch_placement(self) -> tuple[torch.device, torch.dtype]:
        if self._torch is None:
            self._torch = (resolve_device(self._device), torch_dtype(self._dtype))
        return self._torch

    def _torch_module(self) -> BGEM3Module:
        return cast("BGEM3Module", self._module)  # (with backend="torch")

    @property
    def tokenizer(self) -> Any:
        """The checkpoint's transformers tokenizer (``AutoTokenizer``), loaded on first use.

        Encoding does not need it: it runs the same pipeline from bgem3's cache.
        """
        return self._tokenizer.hf

    @property
    def last_stats(self) -> EncodeStats:
        """:class:`~bgem3.encoder.EncodeStats` of this thread's last encode call.

        Each thread has its own.
        """
        stats: EncodeStats = getattr(self._local, "stats", None) or EncodeStats()
        return stats

    @last_stats.setter
    def last_stats(self, stats: EncodeStats) -> None:
        self._local.stats = stats

    # ----------------------------------------------------------------- helpers
    def _check_max_length(self, max_length: int) -> int:
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
            raise TypeError(f"max_length must be an int, got {type(max_length).__name__}")
        if not 2 <= max_length <= self.max_length:
            raise ValueError(
                f"max_length must be between 2 and the model's limit of {self.max_length} "
                f"tokens, got {max_length}"
            )
        return int(max_length)

    # ----------------------------------------------------------------- properties
    @property
    def module(self) -> BGEM3Module | OnnxModule:
        """The network (backbone and heads) that encodes.

        With ``backend="torch"`` a :class:`~bgem3.model.BGEM3Module` in eval mode, for
        inspection and for tools that transform the weights in place; with ONNX Runtime an
        :class:`~bgem3._onnx.OnnxModule` (the session, the heads as arrays). Encoding needs
        none of it.
        """
        return self._module

    @property
    def dense_dim(self) -> int:
        """Width of the dense vectors (1024 for BGE-M3)."""
        return int(self._config.hidden_size)

    @property
    def colbert_dim(self) -> int | None:
        """Width of the ColBERT vectors (from the head file), ``None`` if dense-only."""
        return self._module.colbert_dim

    @property
    def vocab_size(self) -> int:
        """Number of token ids (the column count of sparse CSR matrices)."""
        return int(self._config.vocab_size)

    @property
    def fingerprint(self) -> str:
        """Identifies the checkpoint's weights (indexes use it to refuse another model)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.path)
        return self._fingerprint

    @property
    def has_heads(self) -> bool:
        """Whether sparse and ColBERT outputs are available."""
        return self._module.colbert_dim is not None

    def __repr__(self) -> str:
        return (
            f"BGEM3({self.name!r}, device={self._device!r}, dtype={self._dtype!r}"
            + (f", backend={self.backend!r})" if self.backend != "torch" else ")")
        )

    # ----------------------------------------------------------------- encoding
    def encode(self, texts: Sequence[str], *, mcls: bool = False,
               **options: Unpack[EncodeKeywords]) -> EncodeOutput:
        """Encode texts into the requested outputs; only the requested heads run.

        Args:
            texts: The texts (a list; a bare ``str`` is a ``TypeError``).
            mcls: Multi-CLS dense vectors for long texts (BGE-M3 report): a ``<s>``
                before every 256 tokens, the dense vector is the mean of their states.
                Only the dense output changes; sparse and ColBERT then take a second,
                ordinary pass.
            **options: The :class:`~bgem3._types.EncodeKeywords`, each with its default:
                ``max_length=None`` (tokens per text, ``<s>`` and ``</s>`` included;
                ``None`` takes ``document_max_length``; longer texts are truncated with one
                :class:`TruncationWarning` per call), ``dense=True`` (``float32 [n,
                dense_dim]``), ``sparse=False`` (one :class:`SparseVector` per text),
                ``colbert=False`` (one ``float32 [n_tokens - 1, colbert_dim]`` per text),
                ``batch_size=256`` (most texts in one forward batch; the token budget also
                applies) and ``show_progress=None`` (a tqdm bar; ``None`` shows it for
                large inputs only).

        Returns:
            An :class:`EncodeOutput` in input order.

        Raises:
            TypeError: ``texts`` is not a list of strings, or an unknown keyword.
            ValueError: No output requested, or ``max_length`` out of range.
            HeadNotLoadedError: Sparse or ColBERT requested from a dense-only model.
        """
        _known_options(options, "encode")
        return self._encode_warned("texts", None, texts, mcls=mcls, **options)

    def encode_queries(self, texts: Sequence[str], **options: Unpack[EncodeKeywords]
                       ) -> EncodeOutput:
        """Encode queries: like :meth:`encode` with ``max_length`` defaulting to 512."""
        _known_options(options, "encode_queries")
        return self._encode_warned("queries", self.query_max_length, texts, **options)

    def encode_documents(self, texts: Sequence[str], *, mcls: bool = False,
                         **options: Unpack[EncodeKeywords]) -> EncodeOutput:
        """Encode documents: like :meth:`encode`, ``max_length`` defaulting to 8192."""
        _known_options(options, "encode_documents")
        return self._encode_warned("documents", None, texts, mcls=mcls, **options)

    def _encode_warned(
        self,
        what: str,
        default_length: int | None,
        texts: Sequence[str],
        *,
        max_length: int | None = None,
        dense: bool = True,
        sparse: bool = False,
        colbert: bool = False,
        batch_size: int = 256,
        show_progress: bool | None = None,
        mcls: bool = False,
    ) -> EncodeOutput:
        """The public encode methods: the defaults of their options, then one warning.

        ``what`` names the texts in error messages; ``default_length`` stands for a
        ``max_length`` of ``None`` (``None``: ``document_max_length``).
        """
        output, n_truncated, used = self._encode(
            texts, default_length if max_length is None else max_length,
            dense, sparse, colbert, batch_size, show_progress, mcls, what=what,
        )
        if n_truncated:  # attributed to the caller of the public method
            warn_each_call(f"{n_truncated} of {len(output)} texts were longer than "
                           f"max_length={used} tokens and were truncated",
                           TruncationWarning, stacklevel=3)
        return output

    def _encode(
        self,
        texts: Sequence[str],
        max_length: int | None,
        dense: bool,
        sparse: bool,
        colbert: bool,
        batch_size: int,
        show_progress: bool | None,
        mcls: bool,
        what: str = "texts",
    ) -> tuple[EncodeOutput, int, int]:
        items = as_texts(texts, what)
        length = self._check_max_length(
            self.document_max_length if max_length is None else max_length
        )
        for flag, value in (("dense", dense), ("sparse", sparse), ("colbert", colbert),
                            ("mcls", mcls)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{flag} must be True or False, got {value!r}")
        if not (dense or sparse or colbert):
            raise ValueError("request at least one output: dense, sparse or colbert")
        if (sparse or colbert) and not self.has_heads:
            raise HeadNotLoadedError(
                f"{self.name!r} was loaded with dense_only=True; sparse and ColBERT outputs "
                "need the colbert_linear.pt and sparse_linear.pt heads"
            )
        if mcls and not dense:
            raise ValueError("mcls=True changes only the dense output; request dense=True")
        positive_int(batch_size, "batch_size")
        self.last_stats = stats = EncodeStats()
        started = time.perf_counter()
        if mcls:
            mcls_ids = tokenize(self._backend, items, self._spec, length, mcls=True)
            stats.tokenize_s += time.perf_counter() - started
            dense_part = self._run(mcls_ids, True, False, False, batch_size, show_progress)
            rest = EncodeOutput()
            n_truncated = mcls_ids.n_truncated
            if sparse or colbert:
                started = time.perf_counter()
                tokenized = tokenize(self._backend, items, self._spec, length)
                stats.tokenize_s += time.perf_counter() - started
                rest = self._run(tokenized, False, sparse, colbert, batch_size, show_progress)
                n_truncated = max(n_truncated, tokenized.n_truncated)
            flags = dense_part.truncated
            if rest.truncated is not None and flags is not None:
                flags = flags | rest.truncated
            return EncodeOutput(dense_part.dense, rest.sparse, rest.colbert,
                                dense_part.tokens, flags), n_truncated, length
        tokenized = tokenize(self._backend, items, self._spec, length)
        stats.tokenize_s += time.perf_counter() - started
        output = self._run(tokenized, dense, sparse, colbert, batch_size, show_progress)
        return output, tokenized.n_truncated, length

    def _run(
        self,
        tokenized: Tokenized,
        dense: bool,
        sparse: bool,
        colbert: bool,
        batch_size: int,
        show_progress: bool | None,
    ) -> EncodeOutput:
        from tqdm.auto import tqdm

        n = len(tokenized.ids)
        stats = self.last_stats
        dense_out = np.zeros((n, self.dense_dim), dtype=np.float32) if dense else None
        sparse_slots: list[SparseVector] = [_EMPTY_SPARSE] * n if sparse else []
        colbert_slots: list[NDArray[np.float32]] = [_EMPTY_COLBERT] * n if colbert else []
        if show_progress is None:
            show_progress = int(tokenized.lengths.sum()) >= _PROGRESS_MIN_TOKENS
        batches = plan_batches(tokenized.lengths, self.batch_tokens, batch_size, self.max_padding)
        packed: list[NDArray[np.int64]] = []
        if self._packs and tokenized.cls_positions is None:
            batches, packed = plan_packed(batches, tokenized.lengths, self._pack_width,
                                          self.batch_tokens, batch_size)
        forward = self._onnx_forward if self.backend == "onnx" else self._torch_forward
        with tqdm(total=n, disable=not show_progress, unit="text", desc="bgem3") as bar:
            for k, indices in enumerate(batches + packed):
                started = time.perf_counter()
                batch = (collate(tokenized, indices, self._spec.pad_id) if k < len(batches)
                         else collate_packed(tokenized, indices, self._spec.pad_id,
                                             self._pack_width, self._first_position))
                dense_np, sparse_np, colbert_np = forward(batch, dense, sparse, colbert)
                computed = time.perf_counter()
                if dense_out is not None and dense_np is not None:
                    dense_out[batch.indices] = dense_np
                if sparse_np is not None:
                    vectors = self.sparse_vectors(sparse_np, batch)
                    for i, vector in zip(batch.indices.tolist(), vectors, strict=True):
                        sparse_slots[i] = vector
                if colbert_np is not None:
                    arrays = self._colbert_rows(colbert_np, batch)
                    for i, array in zip(batch.indices.tolist(), arrays, strict=True):
                        colbert_slots[i] = array
                bar.update(len(batch.indices))
                stats.forward_s += computed - started
                stats.postprocess_s += time.perf_counter() - computed
                stats.batches += 1
                stats.computed_tokens += int(batch.input_ids.size if batch.packed is None
                                             else batch.packed.input_ids.size)
        stats.texts += n
        stats.tokens += int(tokenized.lengths.sum())
        return EncodeOutput(
            dense=dense_out,
            sparse=sparse_slots if sparse else None,
            colbert=colbert_slots if colbert else None,
            tokens=tokenized.lengths.astype(np.int32),
            truncated=tokenized.truncated,
        )

    def _onnx_forward(self, batch: Batch, dense: bool, sparse: bool, colbert: bool
                      ) -> tuple[NDArray[np.float32] | None, ...]:
        """One batch through ONNX Runtime and the numpy heads."""
        module = cast("OnnxModule", self._module)
        return module(batch.input_ids, batch.attention_mask, dense=dense, sparse=sparse,
                      colbert=colbert, cls_mask=batch.cls_mask)

    def _torch_forward(self, batch: Batch, dense: bool, sparse: bool, colbert: bool
                       ) -> tuple[NDArray[np.float32] | None, ...]:
        """One batch through the torch module, its outputs back as float32 arrays."""
        import torch

        from bgem3.model import PackedInput

        device = self.device

        def tensor(array: NDArray[Any]) -> torch.Tensor:
            return torch.from_numpy(array).to(device)

        with torch.inference_mode():
            result = self._torch_module()(
                tensor(batch.input_ids), tensor(batch.attention_mask),
                dense=dense, sparse=sparse, colbert=colbert,
                cls_mask=None if batch.cls_mask is None else tensor(batch.cls_mask),
                packed=None if batch.packed is None else PackedInput(
                    *(tensor(a) for a in (batch.packed.input_ids, batch.packed.position_ids,
                                          batch.packed.segments, batch.packed.gather))),
            )
            return tuple(None if t is None else t.float().cpu().numpy()
                         for t in (result.dense, result.sparse, result.colbert))

    def sparse_vectors(self, weights: NDArray[np.float32], batch: Batch) -> list[SparseVector]:
        """The sparse vectors of one forward batch, in its row order.

        :func:`lexical_weights` with this tokenizer's special ids. The one step between
        the sparse head and the ``sparse`` output: a subclass may override it to record
        more about each vector (:mod:`bgem3.compat` keeps FlagEmbedding's key order).

        Args:
            weights: ``float32 [b, L]`` the sparse head's per-token weights.
            batch: The batch they were computed from.

        Returns:
            One vector per row of ``batch``.
        """
        return lexical_weights(weights, batch.input_ids, self._spec.unused_ids)

    @staticmethod
    def _colbert_rows(vectors: NDArray[np.float32], batch: Batch) -> list[NDArray[np.float32]]:
        """Real rows of each sequence (``<s>`` already dropped, final ``</s>`` kept)."""
        counts = batch.lengths - 1
        mask = np.arange(vectors.shape[1])[None, :] < counts[:, None]
        return np.split(vectors[mask], np.cumsum(counts)[:-1])

    # ----------------------------------------------------------------- scoring
    def compute_score(
        self,
        pairs: Sequence[tuple[str, str]],
        weights: Sequence[float] = (1.0, 1.0, 1.0),
        *,
        max_query_length: int | None = None,
        max_passage_length: int | None = None,
        batch_size: int = 256,
        show_progress: bool | None = None,
    ) -> dict[str, list[float]]:
        """Score ``(query, passage)`` pairs in FlagEmbedding's five modes.

        Queries and passages are encoded once each (duplicates once), all three outputs
        from one forward pass. ``weights`` is ``(w_dense, w_sparse, w_colbert)``;
        FlagEmbedding's default is ``(1, 1, 1)``, the BGE-M3 README uses ``(0.4, 0.2, 0.4)``.

        Unlike FlagEmbedding, the ColBERT score uses the passage's real tokens only.
        FlagEmbedding scores zero-padded passages, so when a query token's best real match
        is negative and the passage is not the longest in its batch, it takes 0 instead
        (a padding row) and reports a larger score.

        Args:
            pairs: ``[(query, passage), ...]``.
            weights: ``(w_dense, w_sparse, w_colbert)`` for the fused modes.
            max_query_length: Query tokens (default ``query_max_length``, 512).
            max_passage_length: Passage tokens (default ``document_max_length``; note
                FlagEmbedding's default is 512).
            batch_size: Most texts in one forward batch.
            show_progress: Show a tqdm bar; ``None`` for large inputs only.

        Returns:
            ``{"dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense"}`` to a
            list with one float per pair.

        Raises:
            TypeError: ``pairs`` is not a list of ``(str, str)`` pairs.
            ValueError: Negative or non-finite weights, or weights that are all 0 (weights
                ``(0, 0, w)`` are fine: ``sparse+dense`` is then NaN, with a warning).
            HeadNotLoadedError: The model was loaded with ``dense_only=True``.
        """
        query_texts, passage_texts = as_pairs(pairs)
        fuse_scores(0.0, 0.0, 0.0, weights)  # validate weights before any compute
        w = tuple(float(x) for x in weights)
        queries, q_of = unique_texts(query_texts)
        passages, p_of = unique_texts(passage_texts)
        q_length = self.query_max_length if max_query_length is None else max_query_length
        p_length = self.document_max_length if max_passage_length is None else max_passage_length
        q, q_trunc, _ = self._encode(queries, q_length, True, True, True, batch_size,
                                     show_progress, False, what="queries")
        p, p_trunc, _ = self._encode(passages, p_length, True, True, True, batch_size,
                                     show_progress, False, what="passages")
        if q_trunc or p_trunc:
            warn_each_call(f"{q_trunc} queries (max_query_length={q_length}) and {p_trunc} "
                           f"passages (max_passage_length={p_length}) were truncated",
                           TruncationWarning, stacklevel=2)
        scores = pair_scores(q, p, q_of, p_of, w, self.vocab_size)
        if w[0] + w[1] == 0:
            warnings.warn("the sparse+dense mode is undefined when the dense and sparse "
                          "weights are both 0: its scores are NaN", UserWarning, stacklevel=2)
        return scores

    # ----------------------------------------------------------------- helpers
    def decode_sparse(self, vectors: Sequence[SparseVector]) -> list[dict[str, float]]:
        """Show lexical weights with token strings instead of ids.

        Like FlagEmbedding's ``convert_id_to_token``: each id is decoded on its own
        (``"▁paris"`` becomes ``"paris"``); ids that decode to the same string keep the
        larger weight.

        Args:
            vectors: Sparse vectors from this model.

        Returns:
            One ``{token: weight}`` dict per vector.
        """
        if isinstance(vectors, SparseVector):
            raise TypeError("vectors must be a list of SparseVector; wrap one in a list")
        result = []
        for vector in vectors:
            strings = self._backend.decode_batch([[i] for i in vector.indices.tolist()])
            item: dict[str, float] = {}
            for string, weight in zip(strings, vector.values.tolist(), strict=True):
                item[string] = max(weight, item.get(string, weight))
            result.append(item)
        return result


def load_model(model: str | os.PathLike[str] | BGEM3, *, device: str | None = None,
               dtype: str | None = None, backend: str = DEFAULT_BACKEND) -> BGEM3:
    """``model`` itself if it is loaded, else load it, ``dense_only`` if it has no heads.

    For tools that work with either kind of checkpoint, such as evaluation and mining.

    Example:
        >>> import tempfile
        >>> from bgem3.testing import build_tiny_checkpoint
        >>> load_model(build_tiny_checkpoint(tempfile.mkdtemp(), heads=False)).has_heads
        False
    """
    if isinstance(model, BGEM3):
        return model
    has_heads = resolve_checkpoint(model, require_heads=False).has_heads
    return BGEM3(model, device=device, dtype=dtype, dense_only=not has_heads, backend=backend)


if TYPE_CHECKING:  # mypy checks that a model stands wherever an Encoder is expected
    _MODEL_IS_AN_ENCODER: type[Encoder] = BGEM3
