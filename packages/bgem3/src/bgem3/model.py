"""The BGE-M3 network: XLM-R backbone plus the sparse and ColBERT heads, tensors in and out.

No numpy, no batching, no tokenization here: :class:`BGEM3Module` maps padded id batches
to the three raw outputs, and only the heads that were asked for run.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the torch convention
from torch import nn

from bgem3.checkpoint import COLBERT_HEAD, SPARSE_HEAD, Checkpoint, load_head
from bgem3.errors import CheckpointError, CompileError

_TRANSFORMERS_MAJOR = int(importlib.metadata.version("transformers").split(".")[0])
# The oldest torch on which compile=True was run (with transformers 5.23): older ones fail
# inside transformers (torch.compiler.is_exporting and is_compiling are missing).
COMPILE_TESTED_TORCH = "2.7"

__all__ = ["BGEM3Module", "ModuleOutput", "PackedInput", "load_module",
           "torch_load_refusal", "with_heads"]


class LowPrecisionLinear(nn.Module):
    """A ``Linear`` whose product runs in bf16/fp16 while its input and output stay fp32.

    Used on CPU for ``dtype=bfloat16``: the matrix products (most of the time) use AMX or
    AVX512-BF16, while LayerNorm, softmax, GELU and the residual stream keep fp32. Measured
    on a 6 x 384 model: faster than a pure bf16 model and a dense cosine to fp32 of 0.9998
    instead of 0.998.

    Args:
        linear: The fp32 layer to convert.
        dtype: ``torch.bfloat16`` or ``torch.float16``.
    """

    def __init__(self, linear: nn.Linear, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().to(dtype), requires_grad=False)
        bias = linear.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(dtype),
                                                            requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``linear(x)`` computed in the low precision, in ``x``'s dtype."""
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)


def _lower_linears(module: nn.Module, dtype: torch.dtype) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, LowPrecisionLinear(child, dtype))
        else:
            _lower_linears(child, dtype)


@dataclass(frozen=True)
class ModuleOutput:
    """Raw outputs for one padded batch of ``B`` sequences of length ``L``.

    Attributes:
        dense: ``[B, hidden]`` normalised ``[CLS]`` state (or MCLS mean), or ``None``.
        sparse: ``[B, L]`` token weights ``relu(sparse_linear(H))``, or ``None``.
        colbert: ``[B, L - 1, colbert_dim]`` normalised ``colbert_linear(H[:, 1:])``
            (rows past each sequence's end are garbage to be dropped), or ``None``.
    """

    dense: torch.Tensor | None
    sparse: torch.Tensor | None
    colbert: torch.Tensor | None


@dataclass(frozen=True)
class PackedInput:
    """:class:`~bgem3.batching.Packed` as tensors on the model's device."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segments: torch.Tensor
    gather: torch.Tensor


class BGEM3Module(nn.Module):
    """XLM-R backbone with BGE-M3's two linear heads.

    Args:
        backbone: A transformers ``XLMRobertaModel`` (any encoder returning
            ``last_hidden_state``).
        colbert_linear: ``Linear(hidden, colbert_dim)``, or ``None`` for dense-only use.
        sparse_linear: ``Linear(hidden, 1)``, or ``None`` for dense-only use.
    """

    def __init__(
        self,
        backbone: nn.Module,
        colbert_linear: nn.Linear | None,
        sparse_linear: nn.Linear | None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.config: Any = backbone.config  # the transformers config of the backbone
        self.colbert_linear = colbert_linear
        self.sparse_linear = sparse_linear
        self.compiled = False

    @property
    def colbert_dim(self) -> int | None:
        """Width of the ColBERT vectors, ``None`` without heads."""
        head = self.colbert_linear
        return None if head is None else int(head.out_features)

    @property
    def packs(self) -> bool:
        """Whether the backbone can run packed rows (:class:`PackedInput`) exactly.

        It must take position ids and a 4-D attention mask as given (transformers 5's
        XLM-R with SDPA or eager attention does; others are not relied on), and run eager.
        """
        config = self.config
        return (not self.compiled and _TRANSFORMERS_MAJOR >= 5
                and getattr(config, "model_type", "") == "xlm-roberta"
                and getattr(config, "_attn_implementation", None) in ("sdpa", "eager")
                and getattr(config, "position_embedding_type", "absolute") == "absolute")

    def _unpack(self, packed: PackedInput) -> torch.Tensor:
        """The backbone on packed rows, its states gathered back into ``[B, L, hidden]``."""
        backbone: Any = self.backbone
        dtype: torch.dtype = backbone.get_input_embeddings().weight.dtype
        segments = packed.segments
        alone = segments[:, None, :, None] != segments[:, None, None, :]
        mask = torch.zeros(alone.shape, dtype=dtype, device=segments.device)
        mask.masked_fill_(alone, torch.finfo(dtype).min)
        states = backbone(input_ids=packed.input_ids, attention_mask=mask,
                               position_ids=packed.position_ids,
                               return_dict=True).last_hidden_state
        flat: torch.Tensor = states.reshape(-1, states.shape[-1])
        return flat[packed.gather]

    def compile_backbone(self) -> None:
        """Compile the backbone with ``torch.compile`` (inductor, dynamic shapes, frozen weights).

        Compilation happens at the next forward calls (one graph for a single text, one for
        batches). Inductor's ``freezing`` is switched on around this module's forward calls
        only: it folds the weights into constants that oneDNN prepacks, which is where the
        speed comes from on CPU (without it the compiled backbone is barely faster than
        eager). Inference only: later changes to the parameters are not seen.
        """
        self.backbone.compile(dynamic=True)
        self.compiled = True

    def compile_now(self, ids: list[int], device: torch.device, *, padded: bool,
                    name: str) -> None:
        """Compile the backbone and run it at once: on one text, a batch, a padded batch.

        Each is a graph of its own (a padded batch takes another path in transformers'
        attention mask code); the padded one only if ``padded`` (batches may hold padding).

        Args:
            ids: The token ids of a short text.
            device: Where the module is.
            padded: Also compile the padded-batch graph.
            name: The model's name, for the error.

        Raises:
            CompileError: torch cannot compile it here (the message says what to do).
        """
        self.compile_backbone()
        one = torch.tensor(ids)[None]
        batch = one.repeat(2, 1)
        shapes = [(one, torch.ones_like(one)), (batch, torch.ones_like(batch))]
        if padded:
            mask = torch.ones_like(batch)
            mask[1, -2:] = 0
            shapes.append((batch, mask))
        try:
            with torch.inference_mode():
                for input_ids, attention_mask in shapes:
                    self(input_ids.to(device), attention_mask.to(device))
        except RuntimeError as exc:  # dynamo's and inductor's errors all derive from it
            upgrade = (f"compile=True is tested with torch >= {COMPILE_TESTED_TORCH}, this is "
                       f"torch {torch.__version__}: upgrade torch, or "
                       if torch.__version__ < COMPILE_TESTED_TORCH else "")
            raise CompileError(
                f"compile=True: torch.compile cannot compile {name!r} on {device}; "
                f"{upgrade}load it with compile=False (the default). torch says: "
                f"{type(exc).__name__}: {str(exc).strip()}"
            ) from exc

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        dense: bool = True,
        sparse: bool = False,
        colbert: bool = False,
        cls_mask: torch.Tensor | None = None,
        packed: PackedInput | None = None,
    ) -> ModuleOutput:
        """Run the backbone once and the requested heads on its last hidden state.

        Args:
            input_ids: ``int64 [B, L]`` padded token ids.
            attention_mask: ``int64 [B, L]``, 1 for real tokens.
            dense: Compute the dense vector.
            sparse: Compute per-token lexical weights.
            colbert: Compute per-token ColBERT vectors.
            cls_mask: ``bool [B, L]`` positions whose states are averaged for the dense
                vector (MCLS); ``None`` uses position 0 alone.
            packed: The same sequences laid end to end (see :meth:`packs`); the backbone
                then runs on these, and its states are put back in the padded layout.

        Returns:
            The requested outputs; the others are ``None``.
        """
        if packed is not None:
            hidden = self._unpack(packed)
        else:
            with _freezing() if self.compiled else contextlib.nullcontext():
                hidden = self.backbone(
                    input_ids=input_ids, attention_mask=attention_mask, return_dict=True
                ).last_hidden_state
        dense_out = sparse_out = colbert_out = None
        if dense:
            if cls_mask is None:
                pooled = hidden[:, 0]
            else:
                weights = cls_mask.to(hidden.dtype).unsqueeze(-1)
                pooled = (hidden * weights).sum(1) / weights.sum(1)
            dense_out = F.normalize(pooled, dim=-1)
        if sparse:
            if self.sparse_linear is None:
                raise RuntimeError("sparse head not loaded")
            sparse_out = torch.relu(self.sparse_linear(hidden)).squeeze(-1)
        if colbert:
            if self.colbert_linear is None:
                raise RuntimeError("colbert head not loaded")
            colbert_out = F.normalize(self.colbert_linear(hidden[:, 1:]), dim=-1)
        return ModuleOutput(dense=dense_out, sparse=sparse_out, colbert=colbert_out)


def _freezing() -> contextlib.AbstractContextManager[None]:
    """Inductor's ``freezing`` on for the duration (the global setting is restored after).

    ``torch.compile(..., options={"freezing": True})`` does not freeze (measured: 1.06x on
    a real-size single query, against 1.9x with this), so the setting is patched instead,
    and only around our own calls, leaving any other compiled model of the process alone.
    """
    import torch._inductor.config as inductor_config

    patch: contextlib.AbstractContextManager[None] = inductor_config.patch(freezing=True)
    return patch


def torch_load_refusal() -> str | None:
    """The reason transformers gives to refuse ``torch.load`` with this torch, or ``None``.

    transformers 4.50 and later call ``torch.load`` (``pytorch_model.bin``, a Trainer
    checkpoint's optimizer state) only on torch 2.6 or later (CVE-2025-32434); the check is
    transformers' own, so this follows whatever versions it requires.

    Returns:
        Why loading a pickled checkpoint would fail here, or ``None`` where it works.
    """
    try:
        from transformers.utils.import_utils import check_torch_load_is_safe
    except ImportError:  # a transformers without the check loads on any torch
        return None
    try:
        check_torch_load_is_safe()
    except ValueError as exc:
        return str(exc)
    return None


def load_module(
    checkpoint: Checkpoint,
    *,
    device: torch.device,
    dtype: torch.dtype,
    dense_only: bool = False,
) -> BGEM3Module:
    """Load backbone and heads, cast to ``dtype``, move to ``device`` and set eval mode.

    Args:
        checkpoint: A validated checkpoint.
        device: Target device.
        dtype: Compute dtype (the hub's heads are fp16 and are cast to it).
        dense_only: Skip the heads.

    On CPU a low-precision ``dtype`` applies to the backbone's matrix products only
    (``LowPrecisionLinear``); everything else, the heads included, stays fp32.

    Returns:
        The module, ready for inference.

    Raises:
        CheckpointError: The weights cannot be loaded or the heads do not fit the backbone.
    """
    import transformers
    from transformers import AutoModel

    mixed = device.type == "cpu" and dtype != torch.float32
    storage = torch.float32 if mixed else dtype
    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    kwargs: dict[str, Any] = {dtype_kw: storage, "attn_implementation": "sdpa"}
    import pickle

    from safetensors import SafetensorError

    try:
        backbone = AutoModel.from_pretrained(str(checkpoint.path), **kwargs)
    except (OSError, ValueError, RuntimeError, EOFError, SafetensorError,
            pickle.UnpicklingError) as exc:
        raise CheckpointError(
            f"cannot load the backbone of checkpoint {checkpoint.name!r} ({checkpoint.path}): "
            f"{exc}"
        ) from exc
    module = with_heads(checkpoint, backbone, dense_only=dense_only)
    module.to(device=device, dtype=storage)
    if mixed:
        _lower_linears(backbone.encoder, dtype)
    return module


def with_heads(checkpoint: Checkpoint, backbone: nn.Module, *,
               dense_only: bool = False) -> BGEM3Module:
    """The checkpoint's heads (float32, CPU) on ``backbone``, in eval mode, no gradients.

    ``backbone``: anything with a ``config`` that returns ``last_hidden_state``.

    Raises:
        CheckpointError: The heads are malformed or do not fit the backbone.
    """
    config: Any = backbone.config
    hidden = int(config.hidden_size)
    colbert_linear = sparse_linear = None
    if not dense_only:
        colbert_linear = load_head(checkpoint.path / COLBERT_HEAD, hidden)
        sparse_linear = load_head(checkpoint.path / SPARSE_HEAD, hidden, out_features=1)
    module = BGEM3Module(backbone, colbert_linear, sparse_linear)
    module.eval()
    module.requires_grad_(False)
    return module
