"""A drop-in for FlagEmbedding 1.4's ``BGEM3FlagModel``, running on :class:`bgem3.BGEM3`.

Code written for FlagEmbedding runs unchanged with one import changed::

    # from FlagEmbedding import BGEM3FlagModel
    from bgem3.compat import BGEM3FlagModel

This layer maps names, defaults and return shapes onto the native API and nothing else:
the same constructor arguments and defaults (``batch_size=256``, 512 tokens for queries
*and* passages, ``use_fp16=True``), the same dicts of ``"dense_vecs"``, ``"lexical_weights"``
(``defaultdict`` objects keyed by ``str(token_id)``, numpy scalar values, in FlagEmbedding's key
order) and ``"colbert_vecs"``, a single result for a single string, and the same numbers
(tested against FlagEmbedding 1.4.2 to 1e-5, ``compute_score`` included). New code should
use :class:`bgem3.BGEM3` directly: batch in, batch out, ``int`` token ids, and exact ColBERT
scores in :meth:`bgem3.BGEM3.compute_score`.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import NDArray

from bgem3._inputs import positive_int
from bgem3._types import EncodeOutput, SparseVector
from bgem3.batching import Batch, unique_texts
from bgem3.checkpoint import DEFAULT_BACKEND
from bgem3.encoder import BGEM3, resolve_device
from bgem3.model import BGEM3Module
from bgem3.scoring import colbert_scores, paired_dense_sparse_scores

__all__ = ["BGEM3FlagModel"]

_SCORE_MODES = ("colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense")
_TORCH_DTYPES = {np.dtype(np.float16): torch.float16, np.dtype(np.float64): torch.float64}
_DEVICES_ERROR = ("devices should be a string or an integer or a list of strings or a list of "
                  "integers.")


class _FirstSeenSparse(SparseVector):
    """A sparse vector that also keeps FlagEmbedding's key order.

    FlagEmbedding inserts a token id into its dict at the first position where the token
    has a positive weight; ``first_seen`` holds the ids in that order.
    """

    first_seen: NDArray[np.int64]


class _FlagOrderBGEM3(BGEM3):
    """:class:`BGEM3` whose sparse vectors also record FlagEmbedding's key order."""

    def sparse_vectors(self, weights: NDArray[np.float32], batch: Batch) -> list[SparseVector]:
        """The native vectors, each with the order its ids first got a positive weight."""
        ordered: list[SparseVector] = []
        for row, vector in enumerate(super().sparse_vectors(weights, batch)):
            ids = batch.input_ids[row]
            # a position counts where its weight is positive and its id was kept (not special)
            tokens = ids[(weights[row] > 0) & np.isin(ids, vector.indices)]
            _, first = np.unique(tokens, return_index=True)
            item = _FirstSeenSparse(vector.indices, vector.values)
            object.__setattr__(item, "first_seen", tokens[np.sort(first)])
            ordered.append(item)
        return ordered


def _reject_unknown(where: str, kwargs: Mapping[str, Any]) -> None:
    if kwargs:
        names = ", ".join(repr(name) for name in kwargs)
        raise TypeError(
            f"{where} got unexpected keyword argument(s) {names} (bgem3.compat accepts "
            "FlagEmbedding 1.4's documented arguments only; FlagEmbedding would pass unknown "
            "ones to the tokenizer or store them as attributes)"
        )


def _target_devices(devices: str | int | list[str] | list[int] | None) -> list[str] | None:
    """FlagEmbedding's device forms as a list of device strings (``None``: pick one)."""
    if devices is None:
        return None
    if isinstance(devices, str):
        return [devices]
    if isinstance(devices, int) and not isinstance(devices, bool):
        return [f"cuda:{devices}"]
    if isinstance(devices, list) and devices:
        if all(isinstance(d, str) for d in devices):
            return [str(d) for d in devices]
        if all(isinstance(d, int) and not isinstance(d, bool) for d in devices):
            return [f"cuda:{d}" for d in devices]
    raise ValueError(f"{_DEVICES_ERROR} Got {devices!r}")


def _normalize_rows(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    """``torch.nn.functional.normalize`` on the last axis (eps 1e-12)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def _round_weights(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Round every floating parameter and buffer through ``dtype``, in place."""
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(dtype))


class BGEM3FlagModel:
    r"""FlagEmbedding 1.4's ``BGEM3FlagModel`` (``M3Embedder``) on top of :class:`bgem3.BGEM3`.

    Same arguments, defaults, return types and numbers as FlagEmbedding 1.4.2; only the
    speed differs (length-sorted token-budget batches, no probe forward, vectorized
    post-processing). The underlying model is ``native``.

    Precision follows FlagEmbedding: ``use_fp16=True`` (the default) computes in fp16 on a
    GPU (outputs are then float16 arrays, as FlagEmbedding's are); on the CPU FlagEmbedding
    rounds the weights to fp16 and computes in fp32, and so does this class. ``use_bf16``
    likewise with bfloat16 (bf16 outputs are float32, as in FlagEmbedding). For plain fp32,
    pass ``use_fp16=False``.

    Args:
        model_name_or_path: Hub id (``"BAAI/bge-m3"``) or a local checkpoint directory.
        normalize_embeddings: Must be ``True`` (the default): BGE-M3's vectors are
            normalised; ``False`` raises ``NotImplementedError``.
        use_fp16: Half precision, as above.
        use_bf16: bfloat16, as above; wins over ``use_fp16``.
        query_instruction_for_retrieval: Prefix for :meth:`encode_queries` (BGE-M3 needs
            none), combined by ``query_instruction_format``.
        query_instruction_format: ``str.format`` template of instruction and query
            (``"{}{}"``; a literal ``\n`` in it becomes a newline).
        devices: ``"cpu"``, ``"cuda:0"``, ``0`` (``"cuda:0"``), or a list of these;
            ``None`` picks CUDA, then MPS, then CPU. One device is used: given several,
            the first, with a warning (FlagEmbedding starts one process per device; for
            that, use :class:`bgem3.EncodePool`).
        pooling_method: Must be ``"cls"`` (BGE-M3's pooling); others raise
            ``NotImplementedError``.
        trust_remote_code: Accepted and has no effect: bgem3 loads the XLM-R weights itself
            and never runs code from a checkpoint.
        cache_dir: Hugging Face cache directory.
        colbert_dim: ``-1`` (any width, read from ``colbert_linear.pt``) or the width the
            head file must have; another width raises ``ValueError``.
        batch_size: Most texts in one forward batch (default 256).
        query_max_length: Default ``max_length`` of :meth:`encode_queries` and of the
            queries in :meth:`compute_score` (512).
        passage_max_length: Default ``max_length`` of :meth:`encode`, :meth:`encode_corpus`
            and of the passages in :meth:`compute_score` (512: longer passages are
            truncated, with a :class:`bgem3.TruncationWarning`).
        return_dense: Default of the ``return_dense`` argument of the encode methods.
        return_sparse: Default of ``return_sparse``.
        return_colbert_vecs: Default of ``return_colbert_vecs``.
        truncate_dim: Keep the first ``truncate_dim`` dimensions of the dense and ColBERT
            vectors of the encode methods, renormalised (Matryoshka-style; not applied by
            :meth:`compute_score`, as in FlagEmbedding).
        convert_to_numpy: Accepted and has no effect: outputs are numpy arrays, as
            FlagEmbedding's BGE-M3 outputs always are.
        passage_instruction_for_retrieval: Prefix for :meth:`encode_corpus`.
        passage_instruction_format: Template of instruction and passage (``"{}{}"``).
        **kwargs: Anything else is a ``TypeError`` naming it (FlagEmbedding would store it
            as an attribute and ignore it).

    Attributes:
        native: The :class:`bgem3.BGEM3` doing the work.
        tokenizer: The checkpoint's Hugging Face tokenizer.
        target_devices: The device used, as a one-element list.

    Raises:
        NotImplementedError: ``normalize_embeddings=False`` or another ``pooling_method``.
        ValueError: Devices of an unsupported form or unavailable, or a ``colbert_dim`` that
            does not match the head file.
        TypeError: Unknown keyword arguments.
        bgem3.CheckpointNotFoundError: Unknown path or hub id, or head files missing
            (FlagEmbedding would initialise random heads).

    Example:
        >>> import tempfile
        >>> from bgem3.testing import build_tiny_checkpoint
        >>> model = BGEM3FlagModel(build_tiny_checkpoint(tempfile.mkdtemp()), devices="cpu")
        >>> out = model.encode(["the city of paris", "london"], return_sparse=True)
        >>> out["dense_vecs"].shape, len(out["lexical_weights"]), out["colbert_vecs"]
        ((2, 32), 2, None)
        >>> model.encode("paris")["dense_vecs"].shape
        (32,)
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        normalize_embeddings: bool = True,
        use_fp16: bool = True,
        use_bf16: bool = False,
        query_instruction_for_retrieval: str | None = None,
        query_instruction_format: str = "{}{}",
        devices: str | int | list[str] | list[int] | None = None,
        pooling_method: str = "cls",
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
        colbert_dim: int = -1,
        batch_size: int = 256,
        query_max_length: int = 512,
        passage_max_length: int = 512,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert_vecs: bool = False,
        truncate_dim: int | None = None,
        *,
        convert_to_numpy: bool = True,
        passage_instruction_for_retrieval: str | None = None,
        passage_instruction_format: str = "{}{}",
        **kwargs: Any,
    ) -> None:
        _reject_unknown("BGEM3FlagModel()", kwargs)
        # FlagEmbedding keeps each argument as an attribute of the same name, and its encode
        # methods read their defaults from these (assigning one changes the later calls)
        if not normalize_embeddings:
            raise NotImplementedError(
                "normalize_embeddings=False is not supported: bgem3 returns BGE-M3's "
                "normalised dense and ColBERT vectors only"
            )
        self.normalize_embeddings = normalize_embeddings
        if pooling_method != "cls":
            raise NotImplementedError(
                f"pooling_method={pooling_method!r} is not supported: BGE-M3 pools with "
                "'cls', the only method bgem3 implements"
            )
        self.pooling_method = pooling_method
        if truncate_dim is not None:
            positive_int(truncate_dim, "truncate_dim")
        self.truncate_dim = truncate_dim
        targets = _target_devices(devices)
        if targets is not None and len(targets) > 1:
            warnings.warn(
                f"bgem3.compat runs on one device: using {targets[0]!r} of {targets} "
                "(for one worker per device, use bgem3.EncodePool)", UserWarning, stacklevel=2,
            )
        device = resolve_device(None if targets is None else targets[0])
        self.target_devices = [targets[0] if targets else str(device)]
        self.use_fp16 = use_fp16
        self.use_bf16 = use_bf16
        low = torch.bfloat16 if use_bf16 else torch.float16 if use_fp16 else None
        on_cpu = device.type == "cpu"
        self.model_name_or_path = model_name_or_path
        rounded = on_cpu and low is not None  # torch weights, changed in place below
        self.native: BGEM3 = _FlagOrderBGEM3(
            model_name_or_path, device=device,
            dtype=torch.float32 if on_cpu or low is None else low, cache_dir=cache_dir,
            backend="torch" if rounded else DEFAULT_BACKEND,
        )
        if rounded and low is not None:  # FlagEmbedding loads in low precision, then .float()
            _round_weights(cast(BGEM3Module, self.native.module), low)
        if colbert_dim > 0 and colbert_dim != self.native.colbert_dim:
            raise ValueError(
                f"colbert_dim={colbert_dim} does not match the checkpoint's ColBERT head, "
                f"which is {self.native.colbert_dim} wide (pass -1 to take the head's width)"
            )
        self._out_dtype = np.float16 if not on_cpu and low == torch.float16 else np.float32
        self.tokenizer: Any = self.native.tokenizer
        self.query_instruction_for_retrieval = query_instruction_for_retrieval
        self.query_instruction_format = query_instruction_format
        self.passage_instruction_for_retrieval = passage_instruction_for_retrieval
        self.passage_instruction_format = passage_instruction_format
        self.batch_size = batch_size
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length
        self.return_dense = return_dense
        self.return_sparse = return_sparse
        self.return_colbert_vecs = return_colbert_vecs
        self.convert_to_numpy = convert_to_numpy

    def __repr__(self) -> str:
        return f"BGEM3FlagModel({self.model_name_or_path!r}, native={self.native!r})"

    # ----------------------------------------------------------------- encoding
    @staticmethod
    def get_detailed_instruct(instruction_format: str, instruction: str, sentence: str) -> str:
        r"""Combine an instruction and a text as FlagEmbedding does.

        Example:
            >>> BGEM3FlagModel.get_detailed_instruct("{}\\n{}", "Represent:", "paris")
            'Represent:\nparis'
        """
        if "\\n" in instruction_format:
            instruction_format = instruction_format.replace("\\n", "\n")
        return instruction_format.format(instruction, sentence)

    def encode(self, sentences: list[str] | str, batch_size: int | None = None,
               max_length: int | None = None, return_dense: bool | None = None,
               return_sparse: bool | None = None, return_colbert_vecs: bool | None = None,
               *, convert_to_numpy: bool | None = None, instruction: str | None = None,
               instruction_format: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Encode texts, FlagEmbedding style.

        Args:
            sentences: A list of texts, or one text (then each output is a single result:
                ``dense_vecs`` ``[d]``, one dict, one array).
            batch_size: Most texts per forward batch (default: the constructor's).
            max_length: Tokens per text (default ``passage_max_length``, 512; 0 or 1: no
                truncation below the model's limit, as in FlagEmbedding).
            return_dense: Compute ``"dense_vecs"`` (default: the constructor's, ``True``).
            return_sparse: Compute ``"lexical_weights"`` (default ``False``).
            return_colbert_vecs: Compute ``"colbert_vecs"`` (default ``False``).
            convert_to_numpy: Accepted and has no effect (outputs are numpy).
            instruction: Prefix each text with this, through ``instruction_format``.
            instruction_format: Template of instruction and text (required with
                ``instruction``, as in FlagEmbedding).
            **kwargs: Anything else is a ``TypeError`` (FlagEmbedding passes it to the
                tokenizer).

        Returns:
            ``{"dense_vecs": float32 [n, d] or None, "lexical_weights": [defaultdict(int,
            {str(token_id): np.float32})] or None, "colbert_vecs": [float32 [t_i, d]] or
            None}``: the outputs not requested are ``None``.

        Raises:
            TypeError: ``sentences`` is not a text or a list of texts; unknown arguments.
            ValueError: An empty list, no output requested, ``max_length`` out of range.
        """
        return self._encode("encode()", sentences, batch_size, max_length, return_dense,
                            return_sparse, return_colbert_vecs, kwargs, self.passage_max_length,
                            instruction, instruction_format)

    def encode_queries(self, queries: list[str] | str, batch_size: int | None = None,
                       max_length: int | None = None, return_dense: bool | None = None,
                       return_sparse: bool | None = None, return_colbert_vecs: bool | None = None,
                       *, convert_to_numpy: bool | None = None, **kwargs: Any) -> dict[str, Any]:
        """Like :meth:`encode`, ``max_length`` defaulting to ``query_max_length`` (512).

        ``query_instruction_for_retrieval``, when set, prefixes every query through
        ``query_instruction_format``; ``instruction`` is not an argument here.
        """
        return self._encode("encode_queries()", queries, batch_size, max_length, return_dense,
                            return_sparse, return_colbert_vecs, kwargs, self.query_max_length,
                            self.query_instruction_for_retrieval, self.query_instruction_format)

    def encode_corpus(self, corpus: list[str] | str, batch_size: int | None = None,
                      max_length: int | None = None, return_dense: bool | None = None,
                      return_sparse: bool | None = None, return_colbert_vecs: bool | None = None,
                      *, convert_to_numpy: bool | None = None, **kwargs: Any) -> dict[str, Any]:
        """Like :meth:`encode` with ``passage_instruction_for_retrieval``, when set, as prefix."""
        return self._encode("encode_corpus()", corpus, batch_size, max_length, return_dense,
                            return_sparse, return_colbert_vecs, kwargs, self.passage_max_length,
                            self.passage_instruction_for_retrieval,
                            self.passage_instruction_format)

    def _encode(
        self,
        where: str,
        sentences: list[str] | str,
        batch_size: int | None,
        max_length: int | None,
        return_dense: bool | None,
        return_sparse: bool | None,
        return_colbert_vecs: bool | None,
        kwargs: Mapping[str, Any],
        default_length: int,
        instruction: str | None,
        instruction_format: str | None,
    ) -> dict[str, Any]:
        """The three encode methods once their arguments are bound.

        ``where`` names the method in errors; ``default_length`` stands for a ``max_length``
        of ``None``; ``instruction`` (when not ``None``) prefixes every text through
        ``instruction_format``.
        """
        _reject_unknown(where, kwargs)
        single = isinstance(sentences, str)
        texts = [sentences] if isinstance(sentences, str) else sentences
        if instruction is not None:
            if instruction_format is None:
                raise TypeError(f"{where}: instruction needs instruction_format (e.g. '{{}}{{}}')")
            texts = [self.get_detailed_instruct(instruction_format, instruction, text)
                     for text in texts]
        if isinstance(texts, Sequence) and len(texts) == 0:
            raise ValueError("sentences is empty: pass at least one text")
        dense = bool(self.return_dense if return_dense is None else return_dense)
        sparse = bool(self.return_sparse if return_sparse is None else return_sparse)
        colbert = bool(self.return_colbert_vecs if return_colbert_vecs is None
                       else return_colbert_vecs)
        out = self.native.encode(
            texts, max_length=self._length(max_length, default_length),
            dense=dense, sparse=sparse, colbert=colbert,
            batch_size=self.batch_size if batch_size is None else batch_size,
        )
        result = self._flag_outputs(out)
        if single:
            return {key: None if value is None else value[0] for key, value in result.items()}
        return result

    def _length(self, max_length: int | None, default: int) -> int:
        """``max_length`` or the default, capped at the model's limit.

        FlagEmbedding takes any ``max_length`` and fails on a text longer than the model's
        positions; here that text is truncated at the limit, with a warning. A
        ``max_length`` of 0 or 1 leaves no room for ``<s>`` and ``</s>``: FlagEmbedding's
        tokenizer then does not truncate at all, and neither does this layer (the model's
        limit applies). Negative values stay an error (FlagEmbedding's is an
        ``OverflowError`` from the tokenizer).
        """
        length = default if max_length is None else max_length
        if isinstance(length, (int, np.integer)) and not isinstance(length, bool):
            return self.native.max_length if 0 <= length < 2 else min(length,
                                                                      self.native.max_length)
        return length

    def _flag_outputs(self, out: EncodeOutput) -> dict[str, Any]:
        dense = out.dense
        colbert = out.colbert
        if self.truncate_dim is not None:
            k = self.truncate_dim
            dense = None if dense is None else _normalize_rows(dense[:, :k])
            colbert = None if colbert is None else [_normalize_rows(c[:, :k]) for c in colbert]
        kind = self._out_dtype
        return {
            "dense_vecs": None if dense is None else dense.astype(kind, copy=False),
            "lexical_weights": None if out.sparse is None
            else [self._flag_weights(vector) for vector in out.sparse],
            "colbert_vecs": None if colbert is None
            else [c.astype(kind, copy=False) for c in colbert],
        }

    def _flag_weights(self, vector: SparseVector) -> defaultdict[str, Any]:
        order = getattr(vector, "first_seen", vector.indices)
        values = vector.values[np.searchsorted(vector.indices, order)].astype(self._out_dtype)
        return defaultdict(int, zip(map(str, order.tolist()), values, strict=True))

    # ----------------------------------------------------------------- scoring helpers
    def convert_id_to_token(
        self, lexical_weights: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Show lexical weights with token strings instead of ids, as FlagEmbedding does.

        Each id is decoded on its own by the tokenizer; when two ids decode to the same
        string, the later one's weight is kept (FlagEmbedding's behaviour; the native
        :meth:`bgem3.BGEM3.decode_sparse` keeps the larger).

        Args:
            lexical_weights: One dict or a list of dicts from ``"lexical_weights"``.

        Returns:
            ``{token: weight}``, or a list of them; a list of one dict also gives one dict.
        """
        items = [lexical_weights] if isinstance(lexical_weights, Mapping) else lexical_weights
        converted: list[dict[str, Any]] = []
        for item in items:
            ids = [[int(key)] for key in item]
            tokens = self.tokenizer.batch_decode(ids) if ids else []
            converted.append(dict(zip(tokens, item.values(), strict=True)))
        if len(converted) == 1:
            return converted[0]
        return converted

    def compute_lexical_matching_score(
        self,
        lexical_weights_1: Mapping[str, Any] | list[Mapping[str, Any]],
        lexical_weights_2: Mapping[str, Any] | list[Mapping[str, Any]],
    ) -> Any:
        """Sum of ``w1 * w2`` over the tokens two lexical-weight dicts share.

        Two dicts give one number (an ``np.float32``, or ``0`` when nothing is shared);
        two lists give the ``[len1, len2]`` array of every pair, as FlagEmbedding's loop
        does (for many documents, :func:`bgem3.sparse_scores` on the native outputs is one
        sparse product).

        Raises:
            ValueError: Not two dicts or two lists (FlagEmbedding's message).
        """
        def single(a: Mapping[str, Any], b: Mapping[str, Any]) -> Any:
            score: Any = 0
            for token, weight in a.items():
                if token in b:
                    score += weight * b[token]
            return score

        if isinstance(lexical_weights_1, dict) and isinstance(lexical_weights_2, dict):
            return single(lexical_weights_1, lexical_weights_2)
        if isinstance(lexical_weights_1, list) and isinstance(lexical_weights_2, list):
            return np.array([[single(a, b) for b in lexical_weights_2]
                             for a in lexical_weights_1])
        raise ValueError("The input format of lexical_weights is not correct.")

    def colbert_score(self, q_reps: NDArray[Any], p_reps: NDArray[Any]) -> torch.Tensor:
        """MaxSim of one query's ColBERT vectors against one passage's.

        Args:
            q_reps: ``[t_q, d]`` query vectors (an item of ``"colbert_vecs"``).
            p_reps: ``[t_p, d]`` passage vectors.

        Returns:
            A 0-d ``torch.Tensor`` (FlagEmbedding's type: ``.item()`` gives the float).

        Raises:
            TypeError: Inputs that are not numpy arrays.
            ValueError: Arrays that are not ``[t, d]`` of one width, or an empty passage.
        """
        if not isinstance(q_reps, np.ndarray) or not isinstance(p_reps, np.ndarray):
            raise TypeError(f"colbert_score takes two numpy arrays [t, d], got "
                            f"{type(q_reps).__name__} and {type(p_reps).__name__}")
        if p_reps.ndim != 2:
            raise ValueError(f"p_reps must be one passage's ColBERT vectors [t, d], got shape "
                             f"{p_reps.shape}")
        score = colbert_scores(q_reps, [p_reps])[0]
        return torch.tensor(float(score), dtype=_TORCH_DTYPES.get(q_reps.dtype, torch.float32))

    def compute_score(
        self,
        sentence_pairs: Sequence[Sequence[str]] | Sequence[str],
        batch_size: int | None = None,
        max_query_length: int | None = None,
        max_passage_length: int | None = None,
        weights_for_different_modes: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Score ``(query, passage)`` pairs in FlagEmbedding's five modes, with its numbers.

        The ColBERT mode reproduces FlagEmbedding's: it scores each passage zero-padded to
        the longest passage among the ``batch_size`` pairs it is batched with, so a query
        token whose best real match is negative scores 0 instead when its passage is not
        the longest of its batch; the score then depends on the other pairs. For the exact
        MaxSim (equal to :meth:`colbert_score`), use the native
        :meth:`bgem3.BGEM3.compute_score` (``model.native.compute_score(pairs, weights)``).

        Args:
            sentence_pairs: ``[(query, passage), ...]``, or one ``(query, passage)`` pair
                (then each mode is one float instead of a list). Items past the second of a
                pair (``(query, passage, label)``) are ignored, as FlagEmbedding ignores them.
            batch_size: Pairs per batch (default: the constructor's); see above.
            max_query_length: Query tokens (default ``query_max_length``, 512; 0 or 1: no
                truncation, as in FlagEmbedding).
            max_passage_length: Passage tokens (default ``passage_max_length``, 512; 0 or 1
                as for queries).
            weights_for_different_modes: ``[w_dense, w_sparse, w_colbert]`` (default
                ``[1, 1, 1]``): ``sparse+dense = (w1*s + w0*d) / (w0 + w1)`` and
                ``colbert+sparse+dense = (w2*c + w1*s + w0*d) / (w0 + w1 + w2)``.
            **kwargs: Anything else is a ``TypeError`` (FlagEmbedding passes it to the
                tokenizer).

        Returns:
            ``{"colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense"}`` to a
            list of floats, one per pair (one float each for a single pair); ``[]`` for an
            empty list.

        Raises:
            TypeError: A pair that does not start with two texts; unknown arguments.
            ValueError: Not three weights (FlagEmbedding asserts), lengths out of range.
        """
        _reject_unknown("compute_score()", kwargs)
        if isinstance(sentence_pairs, (str, bytes)) or not isinstance(sentence_pairs, Sequence):
            raise TypeError("sentence_pairs must be a list of (query, passage) pairs, got "
                            f"{type(sentence_pairs).__name__}")
        if len(sentence_pairs) == 0:
            return []
        one_pair = isinstance(sentence_pairs[0], str)
        pairs: list[Sequence[Any]] = [sentence_pairs] if one_pair else list(sentence_pairs)
        for i, pair in enumerate(pairs):
            if (isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence)
                    or len(pair) < 2 or not all(isinstance(t, str) for t in pair[:2])):
                raise TypeError(f"sentence_pairs[{i}] must be a (query, passage) pair of "
                                f"texts, got {pair!r:.80}")
        weights = [1.0, 1.0, 1.0] if weights_for_different_modes is None else [
            float(w) for w in weights_for_different_modes]
        if len(weights) != 3:
            raise ValueError("weights_for_different_modes must be three numbers [dense, "
                             f"sparse, colbert], got {weights_for_different_modes!r}")
        batch_size = self.batch_size if batch_size is None else batch_size
        positive_int(batch_size, "batch_size")
        queries, q_of = unique_texts([pair[0] for pair in pairs])
        passages, p_of = unique_texts([pair[1] for pair in pairs])
        encoded = []
        for texts, length, default in ((queries, max_query_length, self.query_max_length),
                                       (passages, max_passage_length, self.passage_max_length)):
            encoded.append(self.native.encode(
                texts, max_length=self._length(length, default), dense=True,
                sparse=True, colbert=True, batch_size=batch_size))
        q, p = encoded
        if p.tokens is None or q.colbert is None or p.colbert is None:
            raise RuntimeError("internal error: an output that was requested is missing")
        dense, sparse32 = paired_dense_sparse_scores(q, p, q_of, p_of, self.native.vocab_size)
        sparse = sparse32.astype(np.float64)
        colbert = _padded_colbert(q.colbert, p.colbert, q_of, p_of, p.tokens[p_of], batch_size)
        w0, w1, w2 = weights
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = {
                "colbert": colbert,
                "sparse": sparse,
                "dense": dense,
                "sparse+dense": (sparse * w1 + dense * w0) / np.float64(w1 + w0),
                "colbert+sparse+dense": (colbert * w2 + sparse * w1 + dense * w0)
                / np.float64(w0 + w1 + w2),
            }
        if w0 + w1 == 0 or w0 + w1 + w2 == 0:
            warnings.warn("weights_for_different_modes sum to zero for a fused mode: its "
                          "scores are not finite (as in FlagEmbedding)", UserWarning,
                          stacklevel=2)
        result = {mode: np.asarray(scores[mode], dtype=np.float32).tolist()
                  for mode in _SCORE_MODES}
        if one_pair:
            return {mode: values[0] for mode, values in result.items()}
        return result


def _padded_colbert(
    queries: list[NDArray[np.float32]],
    passages: list[NDArray[np.float32]],
    q_of: NDArray[np.int64],
    p_of: NDArray[np.int64],
    lengths: NDArray[np.int32],
    batch_size: int,
) -> NDArray[np.float64]:
    """FlagEmbedding's ``compute_score`` ColBERT term, one MaxSim product per distinct query.

    Pairs are batched ``batch_size`` at a time in input order; a passage shorter than the
    longest of its batch is zero-padded, so its best match per query token is at least 0.
    """
    n = len(q_of)
    longest = np.maximum.reduceat(lengths, np.arange(0, n, batch_size))
    padded = lengths < np.repeat(longest, batch_size)[:n]
    scores = np.zeros(n, dtype=np.float64)
    for query in np.unique(q_of):
        where = np.flatnonzero(q_of == query)
        docs = [passages[j] for j in p_of[where]]
        sizes = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        starts = np.concatenate([np.zeros(1, np.int64), np.cumsum(sizes[:-1])])
        similarities = queries[query] @ np.concatenate(docs).T  # [t_q, sum t_p]
        best = np.maximum.reduceat(similarities, starts, axis=1)  # [t_q, m]
        best[:, padded[where]] = np.maximum(best[:, padded[where]], 0.0)
        scores[where] = best.mean(axis=0, dtype=np.float64)
    return scores
