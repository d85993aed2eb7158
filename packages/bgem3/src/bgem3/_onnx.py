"""The backbone in ONNX Runtime (``backend="onnx"``, the CPU default): exported once, cached.

The XLM-R backbone is exported with torch's ONNX exporter (any batch size and length), traced
with eager attention so that ONNX Runtime's transformer optimizer can fuse each layer's
attention, its GELU and its residual LayerNorms into single kernels (``MultiHeadAttention``,
``BiasGelu``, ``SkipLayerNormalization``; a graph it cannot fuse is kept as exported), and run
by an ONNX Runtime CPU session. The fused graph takes no attention mask: every call runs rows
of one length (on a CPU, batches hold equal lengths; a padded batch is run length by length),
so that ONNX Runtime computes attention in tiles (flash attention) and an 8192-token text needs
about 0.5 GB beside the weights instead of 4.5 GB for its full score matrices.
``dtype="int8"`` quantizes that graph's matrix products (:mod:`bgem3._rowquant`: weights
int8 per output channel, activations uint8 with one scale per token). The heads and the pooling
run in numpy (:class:`OnnxModule`), so that a model whose graph is cached never imports torch:
torch is needed to make a graph, not to run one.

Each graph is cached on disk under the checkpoint's fingerprint and the torch, transformers
and ONNX Runtime versions, with the heads beside it (``heads.safetensors``, float32), so a
later load opens it without loading the torch weights, or torch, at all. It is written to a
temporary directory, stamped with its cache key inside the ONNX
file's own metadata, and renamed into place, so an interrupted export leaves nothing
half-written behind. A cached file that ONNX Runtime cannot read, or whose stamp is not the
key it lies under (an export of other weights copied there, or one from before the stamp),
is exported again. A cache directory that cannot be written is an ``OSError`` that names
it, not an export failure.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import platform
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bgem3.checkpoint import COLBERT_HEAD, SPARSE_HEAD, Checkpoint, cache_dir, load_head
from bgem3.errors import CompileError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["OnnxModule", "available", "cached_module", "onnx_module"]

ONNX_FILE = "backbone.onnx"
HEADS_FILE = "heads.safetensors"
OPSET = 17
# what a cached graph is made of; part of the cache key, so that a change re-exports
GRAPH = "mha1"
# metadata_props of an export: the cache key it was made for, and the model's name
STAMP = "bgem3.cache_key"
STAMP_MODEL = "bgem3.model"
# a write that failed for lack of room or rights, as opposed to a model torch cannot export
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS,
                             errno.EACCES, errno.EPERM, errno.EIO})
# the transformer optimizer's fusions apply to these encoders (BERT's layer layout)
_FUSABLE = frozenset({"xlm-roberta", "roberta", "bert"})
_MHA_MASK_INPUT = 4  # com.microsoft MultiHeadAttention: query, key, value, bias, mask, ...


_PACKAGES = ("onnxruntime", "onnx")  # what running (and making) a graph needs


def available() -> bool:
    """Whether ONNX Runtime and onnx are installed (what ``backend="auto"`` looks for)."""
    return all(_installed(name) for name in _PACKAGES)


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a module set to None, or without a spec
        return False


Array = NDArray[np.float32]


class OnnxModule:
    """The network in ONNX Runtime: the backbone's session, the heads and pooling in numpy.

    What :class:`~bgem3.model.BGEM3Module` computes, on numpy arrays, without torch.

    Args:
        session: An ``onnxruntime.InferenceSession`` of the exported backbone.
        config: The backbone's config (``hidden_size``... as attributes).
        heads: ``{"colbert.weight", "colbert.bias", "sparse.weight", "sparse.bias"}`` as
            float32 arrays (``Linear`` layout: weight ``[out, hidden]``), or ``None`` for a
            dense-only model.

    Attributes:
        masked: Whether the graph takes an attention mask (an unfused export); a fused
            one runs each length's rows on their own.
    """

    def __init__(self, session: Any, config: Any, heads: dict[str, Array] | None) -> None:
        self.session = session
        self.config = config
        self.heads = heads
        self.masked = any(node.name == "attention_mask" for node in session.get_inputs())

    @property
    def colbert_dim(self) -> int | None:
        """Width of the ColBERT vectors, ``None`` without heads."""
        return None if self.heads is None else int(self.heads["colbert.weight"].shape[0])

    def hidden_states(self, input_ids: NDArray[np.int64],
                      attention_mask: NDArray[np.int64]) -> Array:
        """``float32 [B, L, hidden]`` for right-padded ``int64 [B, L]`` ids and mask.

        States past a row's end are zeros where the graph has no mask input.
        """
        if self.masked:
            return self._run(input_ids=input_ids, attention_mask=attention_mask)
        lengths = attention_mask.sum(axis=1)
        width = input_ids.shape[1]
        if bool((lengths == width).all()):
            return self._run(input_ids=input_ids)
        hidden = np.zeros((*input_ids.shape, int(self.config.hidden_size)), dtype=np.float32)
        for length in np.unique(lengths):
            rows = np.flatnonzero(lengths == length)
            hidden[rows, :length] = self._run(
                input_ids=np.ascontiguousarray(input_ids[rows, :length]))
        return hidden

    def __call__(self, input_ids: NDArray[np.int64], attention_mask: NDArray[np.int64], *,
                 dense: bool = True, sparse: bool = False, colbert: bool = False,
                 cls_mask: NDArray[np.bool_] | None = None,
                 ) -> tuple[Array | None, Array | None, Array | None]:
        """``(dense, sparse, colbert)`` as :meth:`bgem3.model.BGEM3Module.forward` makes them.

        Only the requested ones are computed; the others are ``None``.
        """
        hidden = self.hidden_states(input_ids, attention_mask)
        with _one_blas_thread():
            return self._heads(hidden, dense, sparse, colbert, cls_mask)

    def _heads(self, hidden: Array, dense: bool, sparse: bool, colbert: bool,
               cls_mask: NDArray[np.bool_] | None,
               ) -> tuple[Array | None, Array | None, Array | None]:
        dense_out = sparse_out = colbert_out = None
        if dense:
            if cls_mask is None:
                pooled = hidden[:, 0]
            else:
                weights = cls_mask.astype(np.float32)[:, :, None]
                pooled = (hidden * weights).sum(1) / weights.sum(1)
            dense_out = _normalize(pooled)
        if (sparse or colbert) and self.heads is None:
            raise RuntimeError("heads not loaded")
        heads = self.heads or {}
        if sparse:
            scores = hidden @ heads["sparse.weight"][0] + heads["sparse.bias"][0]
            sparse_out = np.maximum(scores, np.float32(0.0))
        if colbert:
            rows = hidden[:, 1:]
            flat = rows.reshape(-1, rows.shape[-1]) @ heads["colbert.weight"].T
            flat += heads["colbert.bias"]
            colbert_out = _normalize(flat).reshape(*rows.shape[:2], -1)
        return dense_out, sparse_out, colbert_out

    def _run(self, **feed: Any) -> Array:
        (hidden,) = self.session.run(["last_hidden_state"], feed)
        out: Array = hidden
        return out


@functools.cache
def _blas() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """One thread for numpy's BLAS for the duration (the heads are 0.3% of the arithmetic).

    Its worker threads would otherwise spin after each product, taking the cores from ONNX
    Runtime's next call: measured +26 ms on a real-size single query with OpenBLAS.
    """
    limit: contextlib.AbstractContextManager[Any] = _blas().limit(limits=1, user_api="blas")
    return limit


def _normalize(x: Array) -> Array:
    """Rows scaled to unit length, as ``torch.nn.functional.normalize`` does (eps 1e-12)."""
    norms = np.sqrt(np.einsum("...i,...i->...", x, x))[..., None]
    out: Array = x / np.maximum(norms, np.float32(1e-12))
    return out


def _read_heads(path: Path, hidden: int) -> dict[str, Array] | None:
    """The heads saved beside a cached graph, or ``None`` if absent or not what we wrote."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        heads = load_file(str(path))
    except (OSError, SafetensorError, ValueError):
        return None
    shapes = {name: array.shape for name, array in heads.items()}
    width = shapes.get("colbert.weight", (0, 0))[0]
    expected = {"colbert.weight": (width, hidden), "colbert.bias": (width,),
                "sparse.weight": (1, hidden), "sparse.bias": (1,)}
    if shapes != expected or any(array.dtype != np.float32 for array in heads.values()):
        return None
    return heads


def numpy_heads(checkpoint: Checkpoint, entry: Path, hidden: int) -> dict[str, Array]:
    """The checkpoint's heads as float32 arrays, read from beside its cached graph.

    The first time, they are read from the checkpoint's ``.pt`` files (with torch,
    ``weights_only``) and saved in ``entry`` for the next loads (best effort: where the
    cache cannot be written, the next load reads the ``.pt`` files again).

    Raises:
        CheckpointError: The head files are malformed or do not fit the backbone.
    """
    path = entry / HEADS_FILE
    cached = _read_heads(path, hidden)
    if cached is not None:
        return cached
    colbert = load_head(checkpoint.path / COLBERT_HEAD, hidden)
    sparse = load_head(checkpoint.path / SPARSE_HEAD, hidden, out_features=1)
    heads: dict[str, Array] = {
        f"{name}.{part}": getattr(layer, part).detach().numpy().astype(np.float32)
        for name, layer in (("colbert", colbert), ("sparse", sparse))
        for part in ("weight", "bias")}
    from safetensors.numpy import save_file

    staging = entry / f".{HEADS_FILE}.{os.getpid()}"
    try:  # written whole, then renamed: a reader never sees half a file
        save_file(heads, str(staging))
        os.replace(staging, path)
    except OSError:
        pass
    finally:
        staging.unlink(missing_ok=True)
    return heads


@contextlib.contextmanager
def _eager_attention(backbone: nn.Module) -> Any:
    """Trace with eager attention (the optimizer fuses its pattern, not SDPA's), then restore."""
    config = getattr(backbone, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch: Callable[[str], None] | None = getattr(backbone, "set_attn_implementation", None)
    if switch is None or before in (None, "eager"):
        yield
        return
    try:
        switch("eager")
    except (ValueError, ImportError):  # a model without eager attention: traced as it is
        yield
        return
    try:
        yield
    finally:
        switch(before)


def _export(backbone: nn.Module, target: Path) -> None:
    """Export ``backbone`` to ``target/backbone.onnx`` (weights beside it above 2 GB)."""
    import torch

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                    ) -> torch.Tensor:
            hidden: torch.Tensor = self.backbone(
                input_ids=input_ids, attention_mask=attention_mask, return_dict=True
            ).last_hidden_state
            return hidden

    pad = int(getattr(backbone.config, "pad_token_id", 1) or 0)
    token = pad + 4  # an ordinary token id (0-3 are XLM-R's special tokens)
    input_ids = torch.full((2, 6), token, dtype=torch.long)
    mask = torch.ones_like(input_ids)
    input_ids[1, -2:], mask[1, -2:] = pad, 0  # a padded row: the mask path is traced too
    axes = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
            "last_hidden_state": {0: "batch", 1: "length"}}
    kwargs: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: no onnxscript needed
    with warnings.catch_warnings(), torch.no_grad(), _eager_attention(backbone):
        warnings.simplefilter("ignore")  # tracer and deprecation notes, not for our users
        torch.onnx.export(
            LastHidden(), (input_ids, mask), str(target / ONNX_FILE),
            input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
            dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, **kwargs)


def _fuse(target: Path, config: Any) -> None:
    """Replace ``target/backbone.onnx`` by the transformer optimizer's fused graph, unmasked.

    Kept as exported (masked, correct, slower) unless every layer's attention was fused.
    """
    if getattr(config, "model_type", "") not in _FUSABLE:
        return
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    exported = target / ONNX_FILE
    options = FusionOptions("bert")
    options.use_multi_head_attention = True  # its CPU kernel has the tiled (flash) path
    with contextlib.redirect_stdout(None), warnings.catch_warnings(), _quiet_logging():
        warnings.simplefilter("ignore")
        fused = optimize_model(
            str(exported), model_type="bert", num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size), optimization_options=options,
            opt_level=0, use_gpu=False)
    graph = fused.model.graph
    attention = [node for node in graph.node if node.op_type == "MultiHeadAttention"]
    if len(attention) != int(config.num_hidden_layers):
        return
    for node in attention:  # no key padding mask: ONNX Runtime tiles unmasked attention
        if len(node.input) > _MHA_MASK_INPUT:
            node.input[_MHA_MASK_INPUT] = ""
    inputs = [value for value in graph.input if value.name != "attention_mask"]
    del graph.input[:]
    graph.input.extend(inputs)
    fused.prune_graph()  # the mask's own nodes go
    for entry in list(target.iterdir()):  # the export (and its weight files) make way
        entry.unlink()
    # (its own writer: sorted nodes, the com.microsoft opset declared, weights beside it)
    fused.save_model_to_file(str(exported), use_external_data_format=True,
                             all_tensors_to_one_file=True)


@functools.cache
def int8_dot_products() -> bool:
    """Whether this CPU multiplies uint8 by int8 without saturating an int16 sum.

    True on x86 with AVX512-VNNI, AVX-VNNI or AMX, and off x86 (ARM64's dot products). An
    x86 CPU with AVX2 alone adds pairs of products in 16 bits, where full-range weights can
    saturate: there the weights are quantized to 7 bits (:mod:`bgem3._rowquant`).
    Unknown (no ``/proc/cpuinfo``) counts as without.
    """
    if platform.machine().lower() not in ("x86_64", "amd64", "x86", "i386", "i686"):
        return True
    try:
        flags = set(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return False
    return not flags.isdisjoint({"avx512_vnni", "avx_vnni", "amx_int8"})


@contextlib.contextmanager
def _quiet_logging() -> Any:
    """No log records below ERROR for the duration (the quantizer logs advice to the root)."""
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(before)


def _threads() -> int:
    """ONNX Runtime's threads: torch's count where torch is loaded, else ``OMP_NUM_THREADS``.

    0 (neither): ONNX Runtime's own default, one per physical core, as torch's.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else 0


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    # idle worker threads sleep between calls instead of spinning: the heads run right
    # after each call, on the same cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path / ONNX_FILE), options,
                                providers=["CPUExecutionProvider"])


def _stamp(path: Path, key: str, name: str) -> None:
    """Write the cache key (the weights' fingerprint and the versions) into the export.

    It goes into the model's own ``metadata_props``, so it travels with the file: an
    export copied under another key is recognised on load. Only the graph is read and
    written again; weights stored beside it (above 2 GB) are left alone.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for entry_key, value in ((STAMP, key), (STAMP_MODEL, name)):
        entry = model.metadata_props.add()
        entry.key, entry.value = entry_key, value
    onnx.save(model, str(path))


def _storage_error(exc: BaseException) -> OSError | None:
    """The error of the file system behind ``exc`` (its cause or context), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in _STORAGE_ERRNOS:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _cache_error(exc: OSError, root: Path) -> OSError:
    """One clear error for a cache directory that cannot hold the export, naming the fix."""
    reason = exc.strerror or str(exc)
    if isinstance(exc.filename, str) and Path(exc.filename) != root:
        reason = f"{reason}: {exc.filename}"
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    kind = type(exc) if type(exc).__module__ == "builtins" else OSError
    error = kind(
        f"backend='onnx' cannot write its export of the backbone to the cache directory "
        f"{root} ({reason}): {'free space there' if full else 'make it a writable directory'}"
        ", or set BGEM3_CACHE_DIR to another directory")
    error.errno = exc.errno  # (no strerror: the message stays the one above)
    return error


def _build(make: Callable[[Path], None], root: Path, final: Path, key: str, name: str) -> None:
    """Make a graph in a staging directory under ``root``, stamp it, rename it to ``final``."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    except OSError as exc:
        raise _cache_error(exc, root) from exc
    try:
        try:
            make(staging)
        except (CompileError, ModuleNotFoundError):
            raise
        except Exception as exc:  # the exporter raises many kinds; each is one clear error
            storage = _storage_error(exc)
            if storage is not None:  # a full disk is not a model torch cannot export
                raise _cache_error(storage, root) from exc
            raise CompileError(
                f"backend='onnx': torch cannot export the backbone of {name!r} to ONNX; "
                f"load it with backend='torch'. torch says: "
                f"{type(exc).__name__}: {str(exc).strip()}") from exc
        try:
            _stamp(staging / ONNX_FILE, key, name)
        except OSError as exc:
            raise _cache_error(exc, root) from exc
        with contextlib.suppress(OSError):  # an existing one (a parallel export) wins
            os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def cache_key(fingerprint: str, quantized: bool = False) -> str:
    """The cache entry's name: the weights, the graph's recipe and every version it depends on.

    An int8 graph for a CPU without int8 dot products (7-bit weights) is another entry.
    """
    versions = "-".join(f"{package}{importlib.metadata.version(package)}"
                        for package in ("torch", "transformers", "onnxruntime"))
    key = f"{fingerprint}-{versions}-opset{OPSET}-{GRAPH}"
    if quantized:
        from bgem3._rowquant import RECIPE

        key += f"-{RECIPE}-int8" + ("" if int8_dot_products() else "-7bit")
    return key.replace("+", "_")


def _open(final: Path, key: str, name: str, last: bool,
          meanwhile: Callable[[], object] | None = None) -> Any:
    """The session of the graph in ``final``, or ``None`` (and ``final`` removed) if unusable.

    ``last``: raise instead, the graph having just been made. ``meanwhile`` runs in this
    thread while ONNX Runtime builds the session in another (it releases the GIL from its
    first steps; work that holds the GIL, such as parsing a tokenizer, then costs no time).
    """
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="bgem3-session") as pool:
            pending = pool.submit(_session, final)
            if meanwhile is not None:
                meanwhile()
            session = pending.result()
    except Exception as exc:  # onnxruntime's own error types: a corrupt or foreign file
        if last:
            raise CompileError(
                f"backend='onnx': ONNX Runtime cannot load the export of {name!r} in "
                f"{final}: {type(exc).__name__}: {str(exc).strip()}") from exc
        shutil.rmtree(final, ignore_errors=True)  # exported again
        return None
    stamp = session.get_modelmeta().custom_metadata_map
    if stamp.get(STAMP) == key:
        return session
    made_of = (f"was exported from {stamp.get(STAMP_MODEL)!r} ({stamp[STAMP]})"
               if STAMP in stamp else "does not say which weights it was exported from")
    if last:
        raise CompileError(
            f"backend='onnx': the export in {final} {made_of}, not from {name!r} "
            f"({key}), and it could not be replaced: delete {final}")
    warnings.warn(f"backend='onnx': the cached export in {final} {made_of}, not from "
                  f"{name!r}; exporting it again", UserWarning, stacklevel=4)
    shutil.rmtree(final, ignore_errors=True)
    return None


def _needs(quantized: bool) -> None:
    for package in _PACKAGES:
        if not _installed(package):
            what = "dtype='int8'" if quantized else "backend='onnx'"
            raise ModuleNotFoundError(f"{what} needs {package}: pip install 'bgem3[onnx]'",
                                      name=package)


def _module(checkpoint: Checkpoint, session: Any, entry: Path, config: Any,
            dense_only: bool) -> OnnxModule:
    heads = None if dense_only else numpy_heads(checkpoint, entry, int(config.hidden_size))
    return OnnxModule(session, config, heads)


def cached_module(checkpoint: Checkpoint, fingerprint: str, config: Any, *,
                  quantized: bool = False, dense_only: bool = False,
                  meanwhile: Callable[[], object] | None = None) -> OnnxModule | None:
    """The cached graph of these weights in a session, with the heads, or ``None`` if none yet.

    What a load takes when the export exists: no torch weights are read (nor torch
    imported, once the heads are cached too). A cached graph that cannot be opened, or
    that is stamped with another key, is removed (with a warning for the latter), and
    ``None`` returned: :func:`onnx_module` makes it again.

    Args:
        checkpoint: The checkpoint (its heads are read from it the first time).
        fingerprint: The checkpoint's fingerprint (part of the cache key).
        config: The backbone's config.
        quantized: The int8 graph (``dtype="int8"``).
        dense_only: Without the heads.
        meanwhile: Work for this thread while the session is built (called at most once,
            only if the graph is cached).
    """
    _needs(quantized)
    key = cache_key(fingerprint, quantized)
    final = cache_dir() / "onnx" / key
    if not (final / ONNX_FILE).is_file():
        return None
    session = _open(final, key, checkpoint.name, last=False, meanwhile=meanwhile)
    return None if session is None else _module(checkpoint, session, final, config, dense_only)


def onnx_module(checkpoint: Checkpoint, backbone: nn.Module, fingerprint: str, *,
                quantized: bool = False, dense_only: bool = False) -> OnnxModule:
    """The exported ``backbone`` in an ONNX Runtime session, exported now unless cached.

    A cached export is used only if the cache key stamped inside it (the weights'
    fingerprint, the torch, transformers, ONNX Runtime and opset versions, the recipe) is
    this one; an export of other weights, or one without the stamp, is exported again,
    with a warning. ``quantized``: the int8 graph, made from the float32 one (itself
    exported first if need be).

    Args:
        checkpoint: The checkpoint ``backbone`` was loaded from (its heads, its name).
        backbone: The loaded fp32 transformers backbone.
        fingerprint: The checkpoint's fingerprint (part of the cache key).
        quantized: Quantize the matrix products to int8 (``dtype="int8"``).
        dense_only: Without the heads.

    Returns:
        The network, ready to encode.

    Raises:
        ModuleNotFoundError: onnxruntime or onnx is not installed.
        CompileError: torch cannot export the backbone, or ONNX Runtime cannot load it.
        OSError: The cache directory cannot hold the export (not writable, not a
            directory, or full); the message names it and the way out (``BGEM3_CACHE_DIR``).
    """
    _needs(quantized)
    config = backbone.config
    name = checkpoint.name
    root = cache_dir() / "onnx"
    key = cache_key(fingerprint, quantized)
    final = root / key

    def make_float32(staging: Path) -> None:
        _export(backbone, staging)
        _fuse(staging, config)

    def make_int8(staging: Path) -> None:
        float32_key = cache_key(fingerprint)
        float32 = root / float32_key
        if not (float32 / ONNX_FILE).is_file():
            _build(make_float32, root, float32, float32_key, name)
        from bgem3 import _rowquant

        _rowquant.quantize(float32 / ONNX_FILE, staging / ONNX_FILE, config=config,
                           weight_bits=8 if int8_dot_products() else 7, threads=_threads())

    make = make_int8 if quantized else make_float32
    for attempt in range(2):
        if not (final / ONNX_FILE).is_file():
            _build(make, root, final, key, name)
        session = _open(final, key, name, last=attempt == 1)
        if session is not None:
            return _module(checkpoint, session, final, config, dense_only)
    raise AssertionError("unreachable")
