"""A tiny, seeded, BGE-M3-shaped checkpoint for tests, examples and benchmarks.

The checkpoint has the real on-disk layout of ``BAAI/bge-m3``: an ``XLMRobertaModel``
(``model.safetensors`` and/or ``pytorch_model.bin``), fp16 ``colbert_linear.pt`` and
``sparse_linear.pt`` head files, and an XLM-R style Unigram tokenizer (``<s>`` = 0,
``<pad>`` = 1, ``</s>`` = 2, ``<unk>`` = 3, ``<mask>`` last, template ``<s> $A </s>``).
Its weights are random, so its outputs mean nothing; it exists so that every code path,
FlagEmbedding parity included, runs offline in seconds.

The vocabulary is written by hand (the ``tokenizers`` Unigram trainer is not
deterministic) and contains no duplicate pieces, so every ``tokenizers`` and
``transformers`` version builds the same tokenizer from it.

Example:
    >>> import tempfile
    >>> from bgem3.testing import build_tiny_checkpoint
    >>> path = build_tiny_checkpoint(tempfile.mkdtemp())
    >>> sorted(p.name for p in path.iterdir())  # doctest: +NORMALIZE_WHITESPACE
    ['colbert_linear.pt', 'config.json', 'model.safetensors', 'pytorch_model.bin',
     'sparse_linear.pt', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']

Command line: ``python -m bgem3.testing DIR [--hidden-size 384 --layers 6 ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "TINY_WORDS",
    "build_tiny_checkpoint",
    "random_texts",
    "write_beir_dataset",
    "write_training_pairs",
]

_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
_MASK = "<mask>"

# Whole words get one piece each (the best Viterbi score); anything else falls back to
# suffix pieces and single characters; characters outside the vocabulary become <unk>.
TINY_WORDS: tuple[str, ...] = tuple(
    """
    the of and to in is was for on that with as by at from it an be this are or
    which has have had not but were their one all also more its new can after
    first two used other when into time over such may only most some city world
    people water river music school data model search query document retrieval
    dense sparse vector token language text embedding index hybrid score rank
    paris london berlin tokyo river mountain ocean forest desert island bridge
    train house garden kitchen window table chair book paper letter story song
    red green blue black white small large long short fast slow good bad old young
    cat dog bird fish horse cow tree flower grass rain snow sun moon star sky
    eat drink run walk read write speak listen learn teach build find make take
    le la les des une est dans pour avec sur pas qui que du au
    der die das und ist nicht mit sich auf für ein eine dem den
    el los las una por con para del como más pero sus
    и в не на что он это как по но из
    的 是 了 在 我 有 他 这 中 大 来 上 国 个 到 说 们 为 子 和 你 地 出 道 也 时 年
    日本 東京 です ます した する こと もの
    في من على إلى أن هذا
    और के है में की से
    """.split()  # noqa: SIM905 - a word list reads best as text
)
"""The words of the tiny checkpoint's vocabulary that get one piece each, in several scripts.

Texts made of them tokenize to whole words; any other word falls back to suffix pieces and
single characters, as in a real sentencepiece vocabulary.
"""

_SUFFIXES = ("s", "es", "ed", "ing", "er", "ly", "tion", "al", "en", "ment", "ness", "est")

_CHARS = (
    "abcdefghijklmnopqrstuvwxyz"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "0123456789"
    ".,;:!?'\"()[]{}-_/\\@#$%&*+=<>|~`^"
    "àâäçéèêëîïôöùûüÿñßáíóúãõœæ"
    "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"
    "αβγδεζηθικλμνξοπρστυφχψω"
    "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん"
    "アイウエオカキクケコサシスセソタチツテトナニヌネノ"
    "日本東京語学生先中国人大小山川水火木金土"
    "ابتثجحخدذرزسشصضطظعغفقكلمنهوي"
    "अआइईउऊएऐओऔकखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह"
)


def _vocabulary() -> list[tuple[str, float]]:
    """Return the hand-built Unigram vocabulary ``[(piece, log_prob), ...]``, no duplicates."""
    pieces: dict[str, float] = {token: 0.0 for token in _SPECIALS}
    pieces.setdefault("▁", -4.0)
    for word in TINY_WORDS:
        pieces.setdefault("▁" + word, -1.0)
    for suffix in _SUFFIXES:
        pieces.setdefault(suffix, -2.5)
    for char in _CHARS:
        pieces.setdefault("▁" + char, -3.0)
        pieces.setdefault(char, -3.5)
    pieces.setdefault(_MASK, 0.0)
    return list(pieces.items())


def _build_tokenizer(directory: Path, model_max_length: int) -> int:
    """Write ``tokenizer.json`` and its configs into ``directory``; return the vocab size."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram

    vocab = _vocabulary()
    tokenizer = Tokenizer(Unigram(vocab, unk_id=3, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    tokenizer.add_special_tokens([*_SPECIALS, _MASK])
    tokenizer.save(str(directory / "tokenizer.json"))

    special = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": _MASK,
    }
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {
        **special,
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": model_max_length,
        "add_prefix_space": True,
        "clean_up_tokenization_spaces": True,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return len(vocab)


def build_tiny_checkpoint(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 8194,
    colbert_dim: int | None = None,
    initializer_range: float = 0.5,
    weights: Sequence[str] = ("safetensors", "bin"),
    heads: bool = True,
) -> Path:
    """Write a seeded random BGE-M3-shaped checkpoint into ``path`` and return it.

    Args:
        path: Target directory; created if missing, files in it are overwritten.
        seed: Seed for every random weight; the same arguments give the same files.
        hidden_size: Hidden width of the XLM-R backbone (BGE-M3: 1024).
        num_layers: Number of transformer layers (BGE-M3: 24).
        num_heads: Attention heads; must divide ``hidden_size`` (BGE-M3: 16).
        intermediate_size: Feed-forward width; defaults to ``4 * hidden_size``.
        max_position_embeddings: Position table size; usable length is this minus 2.
        colbert_dim: Output width of the ColBERT head; defaults to ``hidden_size``.
        initializer_range: Std of the random init. The transformers default (0.02)
            makes every dense cosine close to 1; 0.5 gives rankings that differ on the
            default 2 x 32 model. Use about 0.1 for larger configs (e.g. 6 x 384): large
            random weights make deep models numerically chaotic, so that even
            FlagEmbedding disagrees with itself (1e-3) across batch sizes.
        weights: Which backbone files to write: ``"safetensors"``, ``"bin"`` or both.
        heads: Write ``colbert_linear.pt`` and ``sparse_linear.pt`` (fp16, as on the hub).

    Returns:
        The checkpoint directory.

    Raises:
        ValueError: If ``weights`` names an unknown format or none at all.
    """
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    formats = set(weights)
    if not formats or not formats <= {"safetensors", "bin"}:
        raise ValueError(f"weights must name 'safetensors' and/or 'bin', got {list(weights)}")
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)

    vocab_size = _build_tokenizer(directory, model_max_length=max_position_embeddings - 2)
    config = XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        type_vocab_size=1,
        initializer_range=initializer_range,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    config.architectures = ["XLMRobertaModel"]

    torch.manual_seed(seed)
    backbone = XLMRobertaModel(config)
    config.save_pretrained(directory)
    state = {k: v.contiguous() for k, v in backbone.state_dict().items()}
    if "safetensors" in formats:
        from safetensors.torch import save_file

        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    if "bin" in formats:
        torch.save(state, directory / "pytorch_model.bin")

    if heads:
        colbert = torch.nn.Linear(hidden_size, colbert_dim or hidden_size)
        sparse = torch.nn.Linear(hidden_size, 1)
        for name, head in (("colbert_linear.pt", colbert), ("sparse_linear.pt", sparse)):
            torch.save({k: v.half() for k, v in head.state_dict().items()}, directory / name)
    return directory


def random_texts(
    n: int,
    *,
    min_words: int = 1,
    max_words: int = 32,
    seed: int = 0,
    log_uniform: bool = False,
) -> list[str]:
    """Seeded texts made of the tiny vocabulary's words (about one token per word).

    Args:
        n: Number of texts.
        min_words: Fewest words in a text.
        max_words: Most words in a text.
        seed: Random seed.
        log_uniform: Draw lengths log-uniformly instead of uniformly.

    Returns:
        ``n`` space-joined texts.

    Example:
        >>> random_texts(2, max_words=3, seed=1) == random_texts(2, max_words=3, seed=1)
        True
    """
    rng = np.random.default_rng(seed)
    if log_uniform:
        lengths = np.exp(rng.uniform(np.log(min_words), np.log(max_words + 1), n)).astype(int)
    else:
        lengths = rng.integers(min_words, max_words + 1, n)
    words = np.array(TINY_WORDS)
    return [" ".join(rng.choice(words, int(k))) for k in lengths]


def write_beir_dataset(
    path: str | os.PathLike[str],
    *,
    n_documents: int = 60,
    n_queries: int = 20,
    query_words: int | None = None,
    split: str = "test",
    seed: int = 0,
) -> Path:
    """Write a small labelled dataset in BEIR's layout, for tests and tutorials.

    Documents are distinct :func:`random_texts`; query ``i`` is taken from one document,
    whole (``query_words=None``) or as ``query_words`` consecutive words, and that document
    is its only relevant one (grade 1).

    Args:
        path: Target directory (created).
        n_documents: Corpus size.
        n_queries: Number of queries (at most ``n_documents``).
        query_words: Words per query; ``None`` copies the whole document.
        split: Name of the qrels file (``qrels/<split>.tsv``).
        seed: Random seed.

    Returns:
        The dataset directory.

    Example:
        >>> import tempfile
        >>> root = write_beir_dataset(tempfile.mkdtemp(), n_documents=5, n_queries=2)
        >>> sorted(p.name for p in root.rglob("*"))
        ['corpus.jsonl', 'qrels', 'queries.jsonl', 'test.tsv']
    """
    if not 0 < n_queries <= n_documents:
        raise ValueError(f"need 0 < n_queries <= n_documents, got {n_queries}, {n_documents}")
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    for text in random_texts(4 * n_documents, min_words=8, max_words=40, seed=seed):
        if text not in texts:
            texts.append(text)
        if len(texts) == n_documents:
            break
    if len(texts) < n_documents:
        raise ValueError(f"could not draw {n_documents} distinct documents")
    sources = rng.choice(n_documents, size=n_queries, replace=False)
    root = Path(path)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"_id": f"doc{i}", "title": "", "text": text}) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as f:
        for i, source in enumerate(sources):
            words = texts[source].split()
            if query_words is not None and query_words < len(words):
                start = int(rng.integers(0, len(words) - query_words + 1))
                words = words[start : start + query_words]
            f.write(json.dumps({"_id": f"q{i}", "text": " ".join(words)}) + "\n")
    with (root / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for i, source in enumerate(sources):
            f.write(f"q{i}\tdoc{source}\t1\n")
    return root


def write_training_pairs(
    path: str | os.PathLike[str],
    *,
    n_pairs: int = 64,
    query_words: int = 5,
    seed: int = 0,
) -> Path:
    """Write training pairs in FlagEmbedding's JSONL, for tests and tutorials.

    Each line is ``{"query": ..., "pos": [document], "neg": []}``: the query is
    ``query_words`` consecutive words of a distinct :func:`random_texts` document, and the
    negatives are left for ``bgem3 mine-negatives`` to find.

    Args:
        path: The JSONL file to write (its directory is created).
        n_pairs: Number of lines.
        query_words: Words per query.
        seed: Random seed.

    Returns:
        The file.

    Example:
        >>> import tempfile, pathlib
        >>> file = write_training_pairs(pathlib.Path(tempfile.mkdtemp()) / "t.jsonl", n_pairs=3)
        >>> len(file.read_text().splitlines())
        3
    """
    rng = np.random.default_rng(seed)
    documents = list(dict.fromkeys(random_texts(3 * n_pairs, min_words=query_words + 3,
                                                max_words=40, seed=seed + 1)))[:n_pairs]
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("w", encoding="utf-8") as f:
        for document in documents:
            words = document.split()
            start = int(rng.integers(0, len(words) - query_words + 1))
            query = " ".join(words[start : start + query_words])
            f.write(json.dumps({"query": query, "pos": [document], "neg": []}) + "\n")
    return file


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bgem3.testing", description="Write a tiny random BGE-M3 checkpoint."
    )
    parser.add_argument("path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--max-positions", type=int, default=8194)
    args = parser.parse_args(argv)
    out = build_tiny_checkpoint(
        args.path,
        seed=args.seed,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        num_heads=args.heads,
        max_position_embeddings=args.max_positions,
    )
    print(out)


if __name__ == "__main__":
    _main()
