"""bge-m3-lite's files, made from one of our checkpoints, for ``encode.py --peer bge-m3-lite``.

bge-m3-lite 0.6.2 (PyPI; numpy and onnxruntime only) reads a backbone ONNX graph (inputs
``input_ids`` and ``attention_mask``, output ``token_embeddings``), a SentencePiece model and
FlagEmbedding's two head files. This module builds those from a checkpoint directory into a
cache directory, once per checkpoint:

1. the backbone traced with eager attention (the only trace whose attention onnxruntime's
   transformer optimiser fuses), torch's TorchScript exporter, opset 17, its weights in one
   ``model.onnx_data`` file next to ``model.onnx`` (the layout the peer's ``fuse()`` reads);
2. ``sentencepiece.bpe.model``: the checkpoint's own, or one written from its
   ``tokenizer.json`` (a Unigram model with no normaliser, as our random checkpoints have);
3. copies of ``colbert_linear.pt`` and ``sparse_linear.pt`` (the peer deletes a file whose
   digest it does not expect, so it never sees the checkpoint's originals);
4. the peer's own ``fuse()`` (``model_fused.onnx`` + ``model_fused.onnx_data``), and, only
   when asked, its int8 ``quantize()`` (``model_int8.onnx`` + data), calibrated on a fixed
   public subset: the first texts of the ``calibration.txt`` shipped in its wheel.

``manifest.json`` records the cache key (our checkpoint fingerprint, the tokenizer's digest and
the versions that shape the export), the small files' sizes and SHA-256 (which the peer's own
file check is pointed at, see :func:`load`) and each build step's time and peak memory. The
builds run in a child process (``python benchmarks/_lite.py build ...``), so their memory
never counts in a process that is timed.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _startup import peak_rss_mb

ROOT = Path(__file__).resolve().parent.parent
FORMAT = 1
OPSET = 17
SMALL_FILES = ("sentencepiece.bpe.model", "colbert_linear.pt", "sparse_linear.pt")
FUSED = "model_fused.onnx"
INT8 = "model_int8.onnx"
INT8_NEEDS_GB = 12.0  # memory the int8 build may take at 24 x 1024 (the issue saw 18 GB at 2.27 GB)


# ----------------------------------------------------------------------------- tokenizer
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _message(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (strings and sub-messages)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _enum(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _float(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def spm_from_tokenizer_json(path: Path) -> bytes:
    """A SentencePiece ``ModelProto`` that tokenizes as ``path`` (an XLM-R Unigram tokenizer.json).

    XLM-R numbers ``<s> <pad> </s> <unk>`` 0-3, the SentencePiece pieces from 1 up (its id
    ``i`` is XLM-R's ``i + 1``, ``<pad>`` has no piece) and ``<mask>`` last; so the pieces are
    ``<unk>`` (UNKNOWN), ``<s>``, ``</s>`` (CONTROL), then XLM-R's ids 4 to the one before
    ``<mask>`` with their scores (NORMAL). The model type is Unigram, the normaliser
    ``identity`` with no character map, which is what ``"normalizer": null`` means.

    Raises:
        ValueError: The tokenizer is not of that kind (another model, a normaliser, other
            special tokens).
    """
    spec = json.loads(path.read_text(encoding="utf-8"))
    model = spec.get("model", {})
    if model.get("type") != "Unigram" or spec.get("normalizer") is not None:
        raise ValueError(f"{path}: expected a Unigram model with no normalizer, got model "
                         f"{model.get('type')!r} and normalizer {spec.get('normalizer')!r}; "
                         "put the checkpoint's sentencepiece.bpe.model next to it instead")
    vocab = model["vocab"]
    specials = [piece for piece, _ in vocab[:4]]
    if specials != ["<s>", "<pad>", "</s>", "<unk>"] or vocab[-1][0] != "<mask>":
        raise ValueError(f"{path}: expected XLM-R's <s> <pad> </s> <unk> first and <mask> "
                         f"last, got {specials} and {vocab[-1][0]!r}")
    unknown, normal, control = 2, 1, 3  # SentencePiece's piece types
    pieces = [("<unk>", 0.0, unknown), ("<s>", 0.0, control), ("</s>", 0.0, control)]
    pieces += [(piece, float(score), normal) for piece, score in vocab[4:-1]]
    body = b"".join(
        _message(1, _message(1, piece.encode()) + _float(2, score) + _enum(3, kind))
        for piece, score, kind in pieces)
    trainer_spec = _message(2, _enum(3, 1))  # model_type = UNIGRAM
    normalizer_spec = _message(3, _message(1, b"identity"))
    return body + trainer_spec + normalizer_spec


# ----------------------------------------------------------------------------- cache
def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def cache_key(checkpoint: Path) -> dict[str, str]:
    """What the files depend on: the weights, the tokenizer and the tools that write them."""
    from bgem3.checkpoint import fingerprint

    tokenizer = checkpoint / "sentencepiece.bpe.model"
    if not tokenizer.is_file():
        tokenizer = checkpoint / "tokenizer.json"
    return {"checkpoint": fingerprint(checkpoint), "tokenizer": sha256(tokenizer),
            "opset": str(OPSET), "format": str(FORMAT),
            **{name: version(name) for name in ("torch", "transformers", "onnx", "onnxruntime",
                                                "bge-m3-lite")}}


def export_dir(checkpoint: Path) -> Path:
    """Where the files of ``checkpoint`` go: ``.cache/<its name>-lite``."""
    return ROOT / ".cache" / f"{checkpoint.resolve().name}-lite"


def read_manifest(out: Path) -> dict[str, Any] | None:
    try:
        manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(out / "manifest.json")


def calibration_texts(count: int) -> tuple[list[str], dict[str, Any]]:
    """The first ``count`` texts of the ``calibration.txt`` in bge-m3-lite's wheel, described."""
    from bge_m3_lite.quantize import CALIBRATION_FILE, load_calibration_texts

    texts = load_calibration_texts(CALIBRATION_FILE)[:count]
    about = {"source": f"bge_m3_lite/{CALIBRATION_FILE.name} (bge-m3-lite "
                       f"{version('bge-m3-lite')}), first {len(texts)} texts",
             "texts": len(texts),
             "sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest()}
    return texts, about


# ----------------------------------------------------------------------------- building
def _export(checkpoint: Path, target: Path) -> None:
    """The backbone as ``target/model.onnx`` + ``target/model.onnx_data`` (all weights there)."""
    import onnx
    import torch
    from transformers import AutoModel

    class LastHidden(torch.nn.Module):
        def __init__(self, backbone: torch.nn.Module) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                    ) -> torch.Tensor:
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
            hidden: torch.Tensor = out.last_hidden_state
            return hidden

    backbone = AutoModel.from_pretrained(checkpoint, attn_implementation="eager",
                                         add_pooling_layer=False).eval()
    pad = int(backbone.config.pad_token_id)
    module = LastHidden(backbone)
    del backbone
    input_ids = torch.full((2, 6), pad + 4, dtype=torch.long)  # 0-3 are the special tokens
    mask = torch.ones_like(input_ids)
    input_ids[1, -2:], mask[1, -2:] = pad, 0  # a padded row, so the mask path is traced
    axes = {name: {0: "batch", 1: "length"}
            for name in ("input_ids", "attention_mask", "token_embeddings")}
    kwargs: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter
    raw = target / "raw"
    raw.mkdir()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (input_ids, mask), str(raw / "model.onnx"),
                          input_names=["input_ids", "attention_mask"],
                          output_names=["token_embeddings"], dynamic_axes=axes,
                          opset_version=OPSET, do_constant_folding=True, **kwargs)
    del module
    # Under 2 GB torch writes the weights inside the graph; above, one file per tensor.
    # Either way, save again with every tensor above 1 KiB in the one file fuse() reads.
    graph = onnx.load(str(raw / "model.onnx"))
    onnx.save_model(graph, str(target / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx_data",
                    size_threshold=1024)
    shutil.rmtree(raw)


def build_fp32(checkpoint: Path, out: Path, key: dict[str, str]) -> dict[str, Any]:
    """Export, copy, fuse into a fresh directory beside ``out``, then move it into place."""
    from bge_m3_lite.fuse import fuse
    from bge_m3_lite.tokenizer import XLMRobertaTokenizer

    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    _export(checkpoint, tmp)
    export_s = time.perf_counter() - t0
    spm = checkpoint / "sentencepiece.bpe.model"
    if spm.is_file():
        shutil.copy2(spm, tmp / spm.name)
        tokenizer_from = "the checkpoint's sentencepiece.bpe.model"
    else:
        (tmp / spm.name).write_bytes(spm_from_tokenizer_json(checkpoint / "tokenizer.json"))
        tokenizer_from = "written from the checkpoint's tokenizer.json"
    for name in ("colbert_linear.pt", "sparse_linear.pt"):
        shutil.copy2(checkpoint / name, tmp / name)
    XLMRobertaTokenizer.from_file(tmp / spm.name)  # writes the peer's parse cache once
    t0 = time.perf_counter()
    fused = fuse(tmp / "model.onnx")
    fuse_s = time.perf_counter() - t0
    manifest = {
        "key": key, "checkpoint": str(checkpoint),
        "files": {name: [(tmp / name).stat().st_size, sha256(tmp / name)]
                  for name in SMALL_FILES},
        "tokenizer": tokenizer_from,
        "fp32": {"export_s": round(export_s, 1), "fuse_s": round(fuse_s, 1),
                 "peak_rss_mb": round(peak_rss_mb()),
                 "fuse": {"shared_tensors": fused.shared, "new_tensors": fused.fused,
                          "data_mb": round(fused.data_size / 2**20)},
                 "onnx_data_mb": round((tmp / "model.onnx_data").stat().st_size / 2**20)},
    }
    _write_manifest(tmp, manifest)
    if out.exists():
        if read_manifest(out) is None:
            raise FileExistsError(f"{out} exists and is not a bge-m3-lite export of ours "
                                  "(no manifest.json): move it away")
        shutil.rmtree(out)
    tmp.rename(out)
    return manifest


def build_int8(out: Path, calibration: int) -> dict[str, Any]:
    """The peer's int8 build (SmoothQuant, row-wise int8) of ``out/model_fused.onnx``."""
    from bge_m3_lite.quantize import QuantConfig, quantize

    manifest = read_manifest(out)
    if manifest is None:
        raise FileNotFoundError(f"{out}/manifest.json: build the fp32 files first")
    texts, about = calibration_texts(calibration)
    t0 = time.perf_counter()
    quantize(out / FUSED, out / INT8, QuantConfig(),
             tokenizer_path=out / "sentencepiece.bpe.model", calibration_texts=texts)
    manifest["int8"] = {"calibration": about, "config": "QuantConfig() (rowwise, smooth_alpha 0.5)",
                        "quantize_s": round(time.perf_counter() - t0, 1),
                        "peak_rss_mb": round(peak_rss_mb())}
    _write_manifest(out, manifest)
    return manifest


# ----------------------------------------------------------------------------- parent side
def _run_build(argv: list[str]) -> None:
    """``python benchmarks/_lite.py build ...`` in a child process, its output passed through."""
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "build", *argv], check=True)


def prepare(checkpoint: Path, *, int8: bool = False, calibration: int = 64,
            int8_needs_gb: float = INT8_NEEDS_GB) -> tuple[Path, dict[str, Any]]:
    """The peer's files for ``checkpoint``, built (in child processes) where missing or stale.

    Args:
        checkpoint: Our checkpoint directory.
        int8: Also build the int8 model, if memory allows and it is not built yet.
        calibration: How many of the bundled calibration texts the int8 build uses.
        int8_needs_gb: Available memory (GiB) below which the int8 build is skipped.

    Returns:
        The directory and its manifest; ``manifest["int8_skipped"]`` says why there is no
        int8 model when one was asked for and none could be built.
    """
    out = export_dir(checkpoint)
    key = cache_key(checkpoint)
    manifest = read_manifest(out)
    if manifest is None or manifest.get("key") != key or not (out / FUSED).is_file():
        print(f"bge-m3-lite: exporting and fusing into {out} (once per checkpoint) ...",
              flush=True)
        _run_build([str(checkpoint), str(out), "--key", json.dumps(key)])
        manifest = read_manifest(out)
    if manifest is None:
        raise RuntimeError(f"{out}: the build wrote no manifest.json")
    if not int8:
        return out, manifest
    _, about = calibration_texts(calibration)
    built = manifest.get("int8")
    if built and built["calibration"] == about and (out / INT8).is_file():
        return out, manifest
    import psutil

    available = psutil.virtual_memory().available / 2**30
    if available < int8_needs_gb:
        manifest["int8_skipped"] = (f"int8 build skipped: {available:.1f} GiB available, it "
                                    f"needs about {int8_needs_gb:.0f} GiB (--peer-int8-needs-gb)")
        print(f"bge-m3-lite: {manifest['int8_skipped']}", flush=True)
        return out, manifest
    print(f"bge-m3-lite: int8 build ({about['source']}) ...", flush=True)
    _run_build([str(checkpoint), str(out), "--int8", str(calibration)])
    manifest = read_manifest(out)
    if manifest is None:
        raise RuntimeError(f"{out}: the int8 build left no manifest.json")
    return out, manifest


def load(out: Path, model_file: str, threads: int, low_memory: bool = False) -> Any:
    """``BGEM3Embedder`` on the files in ``out``, with its file check pointed at them.

    The peer checks its tokenizer and head files against pinned sizes and SHA-256 digests of
    BAAI/bge-m3's (and deletes a file that does not match). Here those pins become our files'
    own, from the manifest, and downloads are off: its own check still hashes every file on
    each load, as it would for a user. ``spin=False`` is its default (worker threads that do
    not spin between calls).
    """
    os.environ["BGE_M3_LITE_OFFLINE"] = "1"
    from bge_m3_lite import BGEM3Embedder, hub

    manifest = read_manifest(out)
    if manifest is None:
        raise FileNotFoundError(f"{out}/manifest.json: run prepare() first")

    def pin(name: str) -> Any:
        size, digest = manifest["files"][name]
        return hub.RemoteFile(name, name, size, digest)

    hub.TOKENIZER_FILES = (pin("sentencepiece.bpe.model"),)
    hub.HEAD_FILES = (pin("colbert_linear.pt"), pin("sparse_linear.pt"))
    return BGEM3Embedder(out, model_path=out / model_file, num_threads=threads, quiet=True,
                         spin=False, low_memory=low_memory)


def computed_tokens(ids: list[list[int]], batch_size: int, max_batch_tokens: int) -> int:
    """Tokens the peer's forward passes compute for these ids: each batch padded to its longest."""
    from bge_m3_lite import BGEM3Embedder

    return sum(len(batch) * max(len(ids[i]) for i in batch)
               for batch in BGEM3Embedder._batches(ids, batch_size, max_batch_tokens))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="build bge-m3-lite's files (a child step of "
                                                 "benchmarks/encode.py --peer bge-m3-lite)")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build")
    build.add_argument("checkpoint", type=Path)
    build.add_argument("out", type=Path)
    build.add_argument("--key", help="the cache key (JSON); default: computed here")
    build.add_argument("--int8", type=int, metavar="N",
                       help="the int8 build, calibrated on the first N bundled texts")
    args = parser.parse_args(argv)
    if args.int8 is not None:
        manifest = build_int8(args.out, args.int8)
        print(f"bge-m3-lite int8: {json.dumps(manifest['int8'])}")
    else:
        key = json.loads(args.key) if args.key else cache_key(args.checkpoint)
        manifest = build_fp32(args.checkpoint, args.out, key)
        print(f"bge-m3-lite fp32: {json.dumps(manifest['fp32'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
