"""bgem3.compat.BGEM3FlagModel against FlagEmbedding 1.4.2's BGEM3FlagModel, same checkpoint."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import bgem3
import numpy as np
import pytest
import torch
from bgem3.compat import BGEM3FlagModel
from bgem3.testing import TINY_WORDS, build_tiny_checkpoint, random_texts

ATOL = 1e-5
OUTPUTS = {"return_dense": True, "return_sparse": True, "return_colbert_vecs": True}
CORPUS = [
    *random_texts(30, max_words=120, seed=7, log_uniform=True),
    "", " ", "the", "the the the the of the",  # repeats: max weight per id, first-seen order
    "paris", "paris",
    "🙂 emoji 🙂 and ☃ are <unk>",
    "Москва и Berlin 東京 です и في من और के Ünïcödé straße",
    " ".join(TINY_WORDS[:40]) * 3,
]
LONG = " ".join(random_texts(1, min_words=900, max_words=900, seed=9))  # > 512 tokens


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def compat(tiny_path: Path) -> BGEM3FlagModel:
    return BGEM3FlagModel(str(tiny_path), use_fp16=False, devices="cpu")


@pytest.fixture(scope="module")
def flag_fp16(tiny_path: Path) -> Any:
    from FlagEmbedding import BGEM3FlagModel as FlagModel

    return FlagModel(str(tiny_path), devices="cpu")  # use_fp16=True: fp16 weights, fp32 compute


@pytest.fixture(scope="module")
def compat_fp16(tiny_path: Path) -> BGEM3FlagModel:
    return BGEM3FlagModel(str(tiny_path), devices="cpu")


@pytest.fixture(params=["fp32", "fp16-cpu"])
def models(request: pytest.FixtureRequest) -> tuple[Any, BGEM3FlagModel]:
    """(FlagEmbedding, compat) with the same constructor arguments."""
    if request.param == "fp32":
        return request.getfixturevalue("flag_model"), request.getfixturevalue("compat")
    return request.getfixturevalue("flag_fp16"), request.getfixturevalue("compat_fp16")


def _flag_class() -> Any:
    from FlagEmbedding import BGEM3FlagModel as FlagModel

    return FlagModel


# ----------------------------------------------------------------------------- comparisons
def assert_close(theirs: Any, ours: Any, where: str = "value") -> None:
    """Same types, shapes, dtypes, keys and key order; numbers equal to ATOL."""
    assert type(ours) is type(theirs), (where, type(theirs), type(ours))
    if isinstance(theirs, np.ndarray):
        assert (ours.dtype, ours.shape) == (theirs.dtype, theirs.shape), where
        if theirs.size:
            np.testing.assert_allclose(ours.astype(np.float64), theirs.astype(np.float64),
                                       atol=ATOL, rtol=0, err_msg=where)
    elif isinstance(theirs, torch.Tensor):
        assert (ours.dtype, ours.shape) == (theirs.dtype, theirs.shape), where
        assert abs(float(ours) - float(theirs)) <= ATOL, where
    elif isinstance(theirs, dict):
        assert list(ours) == list(theirs), where  # same keys, same order
        if isinstance(theirs, defaultdict):
            assert ours.default_factory is theirs.default_factory, where
        for key in theirs:
            assert_close(theirs[key], ours[key], f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(theirs, ours, strict=True)):
            assert_close(a, b, f"{where}[{i}]")
    elif isinstance(theirs, (float, np.floating, int, np.integer)):
        assert abs(float(ours) - float(theirs)) <= ATOL, (where, theirs, ours)
    else:
        assert ours == theirs, where


NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def assert_same_printout(theirs: str, ours: str) -> None:
    """The same text around the numbers (whitespace aside), the numbers equal to ATOL."""
    assert re.sub(r"\s+", "", NUMBER.sub("#", ours)) == re.sub(r"\s+", "", NUMBER.sub("#", theirs))
    a = [float(x) for x in NUMBER.findall(theirs)]
    b = [float(x) for x in NUMBER.findall(ours)]
    assert len(a) == len(b)
    np.testing.assert_allclose(b, a, atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------- encoding
@pytest.mark.parametrize("method", ["encode", "encode_queries", "encode_corpus"])
def test_encode_parity(models: tuple[Any, BGEM3FlagModel], method: str) -> None:
    flag, ours = models
    ref = getattr(flag, method)(CORPUS, **OUTPUTS)
    out = getattr(ours, method)(CORPUS, **OUTPUTS)
    assert_close(ref, out, method)
    assert isinstance(out["lexical_weights"][0], defaultdict)
    values = [v for d in out["lexical_weights"] for v in d.values()]
    assert values and all(type(v) is np.float32 for v in values)


def test_encode_defaults_and_constructor_defaults(tiny_path: Path, flag_model: Any,
                                                  compat: BGEM3FlagModel) -> None:
    assert_close(flag_model.encode(CORPUS), compat.encode(CORPUS), "dense only")
    assert compat.encode(CORPUS)["lexical_weights"] is None
    kwargs = {"use_fp16": False, "devices": "cpu", "return_dense": False, "return_sparse": True,
              "return_colbert_vecs": True, "batch_size": 5}
    flag = _flag_class()(str(tiny_path), **kwargs)
    ours = BGEM3FlagModel(str(tiny_path), **kwargs)
    for method in ("encode", "encode_queries", "encode_corpus"):
        ref, out = getattr(flag, method)(CORPUS), getattr(ours, method)(CORPUS)
        assert out["dense_vecs"] is None and out["colbert_vecs"] is not None
        assert_close(ref, out, method)


@pytest.mark.parametrize("batch_size", [1, 3, 256])
def test_batch_sizes_and_truncation(models: tuple[Any, BGEM3FlagModel], batch_size: int) -> None:
    flag, ours = models
    ref = flag.encode(CORPUS, batch_size=batch_size, max_length=16, **OUTPUTS)
    with pytest.warns(bgem3.TruncationWarning):
        out = ours.encode(CORPUS, batch_size=batch_size, max_length=16, **OUTPUTS)
    assert_close(ref, out)
    assert max(len(c) for c in out["colbert_vecs"]) == 15


def test_max_length_beyond_the_model(flag_model: Any, compat: BGEM3FlagModel) -> None:
    """FlagEmbedding takes it for short texts (and fails on longer ones): capped here."""
    assert_close(flag_model.encode(CORPUS, max_length=10**6, **OUTPUTS),
                 compat.encode(CORPUS, max_length=10**6, **OUTPUTS))
    assert_close(flag_model.compute_score(_pairs(), max_passage_length=10**6),
                 compat.compute_score(_pairs(), max_passage_length=10**6))


def test_default_lengths_are_flagembeddings(flag_model: Any, compat: BGEM3FlagModel) -> None:
    """512 tokens for passages too (the native encode_documents keeps 8192)."""
    for method in ("encode", "encode_corpus", "encode_queries"):
        ref = getattr(flag_model, method)([LONG, "paris"], **OUTPUTS)
        with pytest.warns(bgem3.TruncationWarning):
            out = getattr(compat, method)([LONG, "paris"], **OUTPUTS)
        assert out["colbert_vecs"][0].shape[0] == 511
        assert_close(ref, out, method)


@pytest.mark.parametrize("method", ["encode", "encode_queries", "encode_corpus"])
def test_single_string_gives_single_results(models: tuple[Any, BGEM3FlagModel],
                                            method: str) -> None:
    flag, ours = models
    text = CORPUS[3]
    ref, out = getattr(flag, method)(text, **OUTPUTS), getattr(ours, method)(text, **OUTPUTS)
    assert_close(ref, out, method)
    assert out["dense_vecs"].ndim == 1 and out["colbert_vecs"].ndim == 2
    assert isinstance(out["lexical_weights"], defaultdict)
    batch = getattr(ours, method)([text], **OUTPUTS)
    assert_close({k: v[0] for k, v in batch.items()}, out, "batch of one")
    assert getattr(ours, method)(text)["lexical_weights"] is None


def test_instructions(tiny_path: Path) -> None:
    kwargs = {"use_fp16": False, "devices": "cpu",
              "query_instruction_for_retrieval": "Represent this query:",
              "query_instruction_format": "{}\\n{}",
              "passage_instruction_for_retrieval": "passage: "}
    flag = _flag_class()(str(tiny_path), **kwargs)
    ours = BGEM3FlagModel(str(tiny_path), **kwargs)
    texts = CORPUS[:12]
    assert_close(flag.encode_queries(texts, **OUTPUTS), ours.encode_queries(texts, **OUTPUTS))
    assert_close(flag.encode_corpus(texts, **OUTPUTS), ours.encode_corpus(texts, **OUTPUTS))
    assert_close(flag.encode_queries(texts[3]), ours.encode_queries(texts[3]))
    assert_close(flag.encode(texts, instruction="q: ", instruction_format="{}{}"),
                 ours.encode(texts, instruction="q: ", instruction_format="{}{}"))
    plain = BGEM3FlagModel(str(tiny_path), use_fp16=False, devices="cpu")
    assert not np.allclose(ours.encode_queries(texts)["dense_vecs"],
                           plain.encode_queries(texts)["dense_vecs"])
    pairs = list(zip(texts, texts[::-1], strict=True))  # compute_score uses no instruction
    assert_close(flag.compute_score(pairs), ours.compute_score(pairs))
    assert_close(plain.compute_score(pairs), ours.compute_score(pairs))


def test_truncate_dim(tiny_path: Path) -> None:
    kwargs = {"use_fp16": False, "devices": "cpu", "truncate_dim": 8}
    flag = _flag_class()(str(tiny_path), **kwargs)
    ours = BGEM3FlagModel(str(tiny_path), **kwargs)
    out = ours.encode(CORPUS, **OUTPUTS)
    assert out["dense_vecs"].shape[1] == 8 and out["colbert_vecs"][0].shape[1] == 8
    assert_close(flag.encode(CORPUS, **OUTPUTS), out)
    pairs = list(zip(CORPUS, CORPUS[::-1], strict=True))  # not applied by compute_score
    assert_close(flag.compute_score(pairs), ours.compute_score(pairs))


# ----------------------------------------------------------------------------- scoring
def _pairs() -> list[tuple[str, str]]:
    n = len(CORPUS)
    return [(CORPUS[i], CORPUS[(5 * i + 2) % n]) for i in range(n)] + [(CORPUS[0], CORPUS[0])]


@pytest.mark.parametrize(("weights", "batch_size"),
                         [(None, None), ([0.4, 0.2, 0.4], 4), ((0.0, 1.0, 3.0), 1)])
def test_compute_score_parity(models: tuple[Any, BGEM3FlagModel], weights: Any,
                              batch_size: int | None) -> None:
    flag, ours = models
    ref = flag.compute_score(_pairs(), batch_size=batch_size, weights_for_different_modes=weights)
    out = ours.compute_score(_pairs(), batch_size=batch_size, weights_for_different_modes=weights)
    assert list(out) == ["colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense"]
    assert all(type(v) is float for values in out.values() for v in values)
    assert_close(ref, out)


def test_compute_score_lengths(flag_model: Any, compat: BGEM3FlagModel) -> None:
    pairs = [(LONG, LONG), ("paris", LONG), (LONG, "london")]
    ref = flag_model.compute_score(pairs)
    with pytest.warns(bgem3.TruncationWarning):
        out = compat.compute_score(pairs)
    assert_close(ref, out)
    ref = flag_model.compute_score(pairs, max_query_length=20, max_passage_length=1024)
    with pytest.warns(bgem3.TruncationWarning):
        out = compat.compute_score(pairs, max_query_length=20, max_passage_length=1024)
    assert_close(ref, out)


def test_compute_score_reproduces_zero_padded_colbert(tiny_path: Path, tmp_path: Path) -> None:
    """Pairs where FlagEmbedding's zero padding changes the ColBERT score: compat follows it."""
    path = shutil.copytree(tiny_path, tmp_path / "spread")
    generator = torch.Generator().manual_seed(2)  # a zero-bias head: negative best matches
    torch.save({"weight": torch.randn(32, 32, generator=generator).half(),
                "bias": torch.zeros(32).half()}, path / "colbert_linear.pt")
    flag = _flag_class()(str(path), use_fp16=False, devices="cpu")
    ours = BGEM3FlagModel(str(path), use_fp16=False, devices="cpu")
    pool = random_texts(60, max_words=40, seed=21, log_uniform=True)
    vectors = ours.encode(pool, return_dense=False, return_colbert_vecs=True)["colbert_vecs"]
    chosen = [(i, j) for i in range(60) for j in range(60)
              if (vectors[i] @ vectors[j].T).max(axis=1).min() < -1e-3][:6]
    assert chosen, "the pool no longer holds a pair with a negative best match"
    pairs = [(pool[i], pool[j]) for i, j in chosen] + [(pool[0], " ".join(["london"] * 100))]
    ref = flag.compute_score(pairs, weights_for_different_modes=[0.4, 0.2, 0.4])
    out = ours.compute_score(pairs, weights_for_different_modes=[0.4, 0.2, 0.4])
    assert_close(ref, out)
    exact = ours.native.compute_score(pairs, weights=(0.4, 0.2, 0.4))["colbert"]
    for k, (i, j) in enumerate(chosen):
        assert exact[k] == pytest.approx(float(ours.colbert_score(vectors[i], vectors[j])),
                                         abs=ATOL)
        assert out["colbert"][k] > exact[k] + 1e-4


def test_compute_score_single_pair_and_empty(models: tuple[Any, BGEM3FlagModel]) -> None:
    flag, ours = models
    for pair in (("paris", "the city of paris"), ["london", "paris"]):
        out = ours.compute_score(pair, weights_for_different_modes=[0.4, 0.2, 0.4])
        assert all(type(v) is float for v in out.values())
        assert_close(flag.compute_score(pair, weights_for_different_modes=[0.4, 0.2, 0.4]), out)
    assert flag.compute_score([]) == ours.compute_score([]) == []


def test_scoring_helpers(models: tuple[Any, BGEM3FlagModel]) -> None:
    flag, ours = models
    texts = CORPUS[:16]
    ref, out = flag.encode(texts, **OUTPUTS), ours.encode(texts, **OUTPUTS)
    weights_ref, weights_out = ref["lexical_weights"], out["lexical_weights"]
    for i in range(len(texts)):
        for j in range(len(texts)):
            assert_close(flag.compute_lexical_matching_score(weights_ref[i], weights_ref[j]),
                         ours.compute_lexical_matching_score(weights_out[i], weights_out[j]))
            assert_close(flag.colbert_score(ref["colbert_vecs"][i], ref["colbert_vecs"][j]),
                         ours.colbert_score(out["colbert_vecs"][i], out["colbert_vecs"][j]))
    for a, b in ((slice(0, 16), slice(0, 16)), (slice(0, 3), slice(3, 5)), (slice(0, 0),) * 2):
        assert_close(flag.compute_lexical_matching_score(weights_ref[a], weights_ref[b]),
                     ours.compute_lexical_matching_score(weights_out[a], weights_out[b]))
    for item in (slice(0, 16), slice(5, 6), 5, slice(0, 0)):
        assert_close(flag.convert_id_to_token(weights_ref[item]),
                     ours.convert_id_to_token(weights_out[item]), f"convert {item}")
    assert isinstance(ours.convert_id_to_token(weights_out[5:6]), dict)  # a list of one, too


def test_fp16_on_cpu_rounds_the_weights(compat: BGEM3FlagModel,
                                        compat_fp16: BGEM3FlagModel) -> None:
    for tensor in compat_fp16.native.module.parameters():
        assert torch.equal(tensor, tensor.half().float())
        assert tensor.dtype == torch.float32
    a, b = compat.encode(CORPUS), compat_fp16.encode(CORPUS)
    assert 1e-5 < np.abs(a["dense_vecs"] - b["dense_vecs"]).max() < 1e-2


# ----------------------------------------------------------------------------- arguments
def test_arguments_without_meaning_are_accepted(tiny_path: Path, compat: BGEM3FlagModel) -> None:
    ours = BGEM3FlagModel(str(tiny_path), use_fp16=False, devices=["cpu"],
                          trust_remote_code=True, convert_to_numpy=False, colbert_dim=32)
    assert ours.target_devices == ["cpu"]
    assert_close(compat.encode(CORPUS, **OUTPUTS),
                 ours.encode(CORPUS, convert_to_numpy=False, **OUTPUTS))
    with pytest.warns(UserWarning, match="one device"):
        several = BGEM3FlagModel(str(tiny_path), use_fp16=False, devices=["cpu", "cpu"])
    assert several.target_devices == ["cpu"]


def test_unknown_keyword_arguments_are_type_errors(tiny_path: Path,
                                                   compat: BGEM3FlagModel) -> None:
    with pytest.raises(TypeError, match="'use_fp32'"):
        BGEM3FlagModel(str(tiny_path), use_fp32=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'padding'"):
        compat.encode(["paris"], padding=True)
    with pytest.raises(TypeError, match="'instruction'"):
        compat.encode_queries(["paris"], instruction="q: ")
    with pytest.raises(TypeError, match="'max_length'"):
        compat.compute_score([("a", "b")], max_length=8)


def test_unsupported_arguments_are_clear_errors(tiny_path: Path) -> None:
    flag_cls = _flag_class()
    with pytest.raises(NotImplementedError, match="normalize_embeddings"):
        BGEM3FlagModel(str(tiny_path), normalize_embeddings=False)
    with pytest.raises(NotImplementedError, match="pooling_method"):
        BGEM3FlagModel(str(tiny_path), pooling_method="mean")
    for devices in (1.5, [], ["cpu", 0], ("cpu",)):
        with pytest.raises(ValueError, match="devices should be"):
            BGEM3FlagModel(str(tiny_path), devices=devices)  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            BGEM3FlagModel(str(tiny_path), devices=0)
    with pytest.raises(RuntimeError):  # FlagEmbedding: a state_dict size mismatch
        flag_cls(str(tiny_path), use_fp16=False, devices="cpu", colbert_dim=16)
    with pytest.raises(ValueError, match="colbert_dim=16"):
        BGEM3FlagModel(str(tiny_path), devices="cpu", colbert_dim=16)
    with pytest.raises(ValueError, match="truncate_dim"):
        BGEM3FlagModel(str(tiny_path), devices="cpu", truncate_dim=0)


def test_missing_heads_are_an_error(tiny_path: Path, tmp_path: Path) -> None:
    path = shutil.copytree(tiny_path, tmp_path / "no-heads")
    (path / "sparse_linear.pt").unlink()  # FlagEmbedding: random heads, an INFO log line
    with pytest.raises(bgem3.CheckpointNotFoundError, match=r"sparse_linear\.pt"):
        BGEM3FlagModel(str(path), devices="cpu")


def test_rejected_calls(flag_model: Any, compat: BGEM3FlagModel) -> None:
    """What FlagEmbedding rejects (often with an unrelated error), compat rejects clearly."""
    rejected: list[tuple[str, type[Exception], str]] = [
        ("encode([])", ValueError, "empty"),
        ("encode(['a'], return_dense=False)", ValueError, "at least one output"),
        ("encode(['a', None])", TypeError, r"texts\[1\]"),
        ("encode('a', instruction='q')", TypeError, "instruction_format"),
        ("compute_score([('a', 'b')], weights_for_different_modes=[1, 1])", ValueError,
         "three numbers"),
        ("colbert_score([1.0], [1.0])", TypeError, "numpy arrays"),
        ("compute_lexical_matching_score({'1': 1.0}, [{'1': 1.0}])", ValueError,
         "The input format of lexical_weights is not correct"),
    ]
    for call, error, message in rejected:
        with pytest.raises(Exception):  # noqa: B017, PT011 - FlagEmbedding fails one way or another
            eval(f"flag_model.{call}")
        with pytest.raises(error, match=message):
            eval(f"compat.{call}")
    with pytest.raises(ValueError, match="max_length must be between 2"):
        compat.encode(["a"], max_length=-1)  # FlagEmbedding: an OverflowError in the tokenizer
    with pytest.raises(TypeError, match=r"sentence_pairs\[1\] must be a \(query, passage\)"):
        compat.compute_score([("a", "b"), ("a",)])  # FlagEmbedding: an IndexError


@pytest.mark.parametrize("length", [0, 1])
def test_lengths_without_room_for_special_tokens_do_not_truncate(
        flag_model: Any, compat: BGEM3FlagModel, length: int) -> None:
    """FlagEmbedding's tokenizer cannot truncate below <s> </s>, so it does not truncate."""
    for method in ("encode", "encode_queries", "encode_corpus"):
        assert_close(getattr(flag_model, method)(CORPUS, max_length=length, **OUTPUTS),
                     getattr(compat, method)(CORPUS, max_length=length, **OUTPUTS), method)
    assert_close(flag_model.compute_score(_pairs(), max_query_length=length,
                                          max_passage_length=length),
                 compat.compute_score(_pairs(), max_query_length=length,
                                      max_passage_length=length))


def test_items_after_the_pair_are_ignored_as_in_flagembedding(
        flag_model: Any, compat: BGEM3FlagModel) -> None:
    labelled = [(query, passage, i % 2) for i, (query, passage) in enumerate(_pairs())]
    assert_close(flag_model.compute_score(labelled), compat.compute_score(labelled))
    assert_close(flag_model.compute_score(("paris", "the city of paris", "label")),
                 compat.compute_score(("paris", "the city of paris", "label")))


# ----------------------------------------------------------------------------- snippets
# The BGE-M3 model card (https://huggingface.co/BAAI/bge-m3, README "Usage"; the same code as
# FlagEmbedding's research/BGE_M3/README.md, whose dense example also passes
# devices=['cuda:0']) and the BGE-M3 tutorial (FlagEmbedding Tutorials/1_Embedding/
# 1.2.4_BGE-M3.ipynb, and docs/source/bge/bge_m3.rst), verbatim but for trailing spaces.
MODEL_CARD_DENSE = """
from FlagEmbedding import BGEM3FlagModel

model = BGEM3FlagModel('BAAI/bge-m3',
                       use_fp16=True) # Setting use_fp16 to True speeds up computation with a slight performance degradation

sentences_1 = ["What is BGE M3?", "Defination of BM25"]
sentences_2 = ["BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.",
               "BM25 is a bag-of-words retrieval function that ranks a set of documents based on the query terms appearing in each document"]

embeddings_1 = model.encode(sentences_1,
                            batch_size=12,
                            max_length=8192, # If you don't need such a long length, you can set a smaller value to speed up the encoding process.
                            )['dense_vecs']
embeddings_2 = model.encode(sentences_2)['dense_vecs']
similarity = embeddings_1 @ embeddings_2.T
print(similarity)
# [[0.6265, 0.3477], [0.3499, 0.678 ]]
"""  # noqa: E501

MODEL_CARD_SPARSE = """
from FlagEmbedding import BGEM3FlagModel

model = BGEM3FlagModel('BAAI/bge-m3',  use_fp16=True) # Setting use_fp16 to True speeds up computation with a slight performance degradation

sentences_1 = ["What is BGE M3?", "Defination of BM25"]
sentences_2 = ["BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.",
               "BM25 is a bag-of-words retrieval function that ranks a set of documents based on the query terms appearing in each document"]

output_1 = model.encode(sentences_1, return_dense=True, return_sparse=True, return_colbert_vecs=False)
output_2 = model.encode(sentences_2, return_dense=True, return_sparse=True, return_colbert_vecs=False)

# you can see the weight for each token:
print(model.convert_id_to_token(output_1['lexical_weights']))
# [{'What': 0.08356, 'is': 0.0814, 'B': 0.1296, 'GE': 0.252, 'M': 0.1702, '3': 0.2695, '?': 0.04092},
#  {'De': 0.05005, 'fin': 0.1368, 'ation': 0.04498, 'of': 0.0633, 'BM': 0.2515, '25': 0.3335}]


# compute the scores via lexical mathcing
lexical_scores = model.compute_lexical_matching_score(output_1['lexical_weights'][0], output_2['lexical_weights'][0])
print(lexical_scores)
# 0.19554901123046875

print(model.compute_lexical_matching_score(output_1['lexical_weights'][0], output_1['lexical_weights'][1]))
# 0.0
"""  # noqa: E501

# The start of the ColBERT and compute_score examples (the same in both)
MODEL_CARD_START = """
from FlagEmbedding import BGEM3FlagModel

model = BGEM3FlagModel('BAAI/bge-m3',  use_fp16=True)

sentences_1 = ["What is BGE M3?", "Defination of BM25"]
sentences_2 = ["BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.",
               "BM25 is a bag-of-words retrieval function that ranks a set of documents based on the query terms appearing in each document"]
"""  # noqa: E501

MODEL_CARD_COLBERT = MODEL_CARD_START + """
output_1 = model.encode(sentences_1, return_dense=True, return_sparse=True, return_colbert_vecs=True)
output_2 = model.encode(sentences_2, return_dense=True, return_sparse=True, return_colbert_vecs=True)

print(model.colbert_score(output_1['colbert_vecs'][0], output_2['colbert_vecs'][0]))
print(model.colbert_score(output_1['colbert_vecs'][0], output_2['colbert_vecs'][1]))
# 0.7797
# 0.4620
"""  # noqa: E501

MODEL_CARD_COMPUTE_SCORE = MODEL_CARD_START + """
sentence_pairs = [[i,j] for i in sentences_1 for j in sentences_2]

print(model.compute_score(sentence_pairs,
                          max_passage_length=128, # a smaller max length leads to a lower latency
                          weights_for_different_modes=[0.4, 0.2, 0.4])) # weights_for_different_modes(w) is used to do weighted sum: w[0]*dense_score + w[1]*sparse_score + w[2]*colbert_score

# {
#   'colbert': [0.7796499729156494, 0.4621465802192688, 0.4523794651031494, 0.7898575067520142],
#   'sparse': [0.195556640625, 0.00879669189453125, 0.0, 0.1802978515625],
#   'dense': [0.6259765625, 0.347412109375, 0.349853515625, 0.67822265625],
#   'sparse+dense': [0.482503205537796, 0.23454029858112335, 0.2332356721162796, 0.5122477412223816],
#   'colbert+sparse+dense': [0.6013619303703308, 0.3255828022956848, 0.32089319825172424, 0.6232916116714478]
# }
"""  # noqa: E501

TUTORIAL = """
from FlagEmbedding import BGEM3FlagModel

model = BGEM3FlagModel('BAAI/bge-m3', use_fp16=True)

sentences_1 = ["What is BGE M3?", "Defination of BM25"]
sentences_2 = ["BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.",
               "BM25 is a bag-of-words retrieval function that ranks a set of documents based on the query terms appearing in each document"]

# If you don't need such a long length of 8192 input tokens, you can set max_length to a smaller value to speed up encoding.
embeddings_1 = model.encode(sentences_1, max_length=10)['dense_vecs']
embeddings_2 = model.encode(sentences_2, max_length=100)['dense_vecs']
s_dense = embeddings_1 @ embeddings_2.T
print(s_dense)

output_1 = model.encode(sentences_1, return_sparse=True)
output_2 = model.encode(sentences_2, return_sparse=True)

# you can see the weight for each token:
print(model.convert_id_to_token(output_1['lexical_weights']))

# compute the scores via lexical mathcing
s_lex_10_20 = model.compute_lexical_matching_score(output_1['lexical_weights'][0], output_2['lexical_weights'][0])
s_lex_10_21 = model.compute_lexical_matching_score(output_1['lexical_weights'][0], output_2['lexical_weights'][1])

print(s_lex_10_20)
print(s_lex_10_21)

output_1 = model.encode(sentences_1, return_dense=True, return_sparse=True, return_colbert_vecs=True)
output_2 = model.encode(sentences_2, return_dense=True, return_sparse=True, return_colbert_vecs=True)

print(f"({len(output_1['colbert_vecs'][0])}, {len(output_1['colbert_vecs'][0][0])})")
print(f"({len(output_2['colbert_vecs'][0])}, {len(output_2['colbert_vecs'][0][0])})")

s_mul_10_20 = model.colbert_score(output_1['colbert_vecs'][0], output_2['colbert_vecs'][0]).item()
s_mul_10_21 = model.colbert_score(output_1['colbert_vecs'][0], output_2['colbert_vecs'][1]).item()

print(s_mul_10_20)
print(s_mul_10_21)

s_rank_10_20 = 1/3 * s_dense[0][0] + 1/3 * s_lex_10_20 + 1/3 * s_mul_10_20
s_rank_10_21 = 1/3 * s_dense[0][1] + 1/3 * s_lex_10_21 + 1/3 * s_mul_10_21

print(s_rank_10_20)
print(s_rank_10_21)
"""  # noqa: E501

DOCS_USAGE = """
from FlagEmbedding import BGEM3FlagModel

model = BGEM3FlagModel('BAAI/bge-m3')

sentences_1 = ["What is BGE M3?", "Defination of BM25"]

output = model.encode(sentences_1, return_dense=True, return_sparse=True, return_colbert_vecs=True)
dense, sparse, multiv = output['dense_vecs'], output['lexical_weights'], output['colbert_vecs']
"""

SNIPPETS = {"model-card-dense": MODEL_CARD_DENSE, "model-card-sparse": MODEL_CARD_SPARSE,
            "model-card-colbert": MODEL_CARD_COLBERT,
            "model-card-compute-score": MODEL_CARD_COMPUTE_SCORE, "tutorial": TUTORIAL,
            "docs-usage": DOCS_USAGE}
FLAG_IMPORT = "from FlagEmbedding import BGEM3FlagModel"


def run_snippet(code: str) -> tuple[str, dict[str, Any]]:
    """Run a snippet; return what it printed and the variables it left."""
    namespace: dict[str, Any] = {"__name__": "__snippet__"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.simplefilter("ignore", bgem3.TruncationWarning)  # stderr only; FE is silent
        exec(compile(code, "<snippet>", "exec"), namespace)
    return printed.getvalue(), namespace


@pytest.fixture(scope="module", params=["tiny", "tiny-seed-3"])
def snippet_checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                       ) -> Path:
    """The session checkpoint, and one whose sparse head weighs every snippet sentence."""
    if request.param == "tiny":
        path: Path = request.getfixturevalue("tiny_path")
        return path
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-seed-3"), seed=3)


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason="the snippets pick the device: on a GPU both run in fp16 (not 1e-5)")
@pytest.mark.parametrize("name", list(SNIPPETS))
def test_snippets_print_the_same(snippet_checkpoint: Path, name: str) -> None:
    code = SNIPPETS[name].replace("'BAAI/bge-m3'", repr(str(snippet_checkpoint)))
    assert code.count(FLAG_IMPORT) == 1 and str(snippet_checkpoint) in code
    theirs, their_vars = run_snippet(code)
    ours, our_vars = run_snippet(code.replace(FLAG_IMPORT, "from bgem3.compat import "
                                                           "BGEM3FlagModel"))
    assert isinstance(our_vars["model"], BGEM3FlagModel)
    assert theirs.strip() or name == "docs-usage"
    assert_same_printout(theirs, ours)
    for key in their_vars.keys() - {"model", "BGEM3FlagModel", "__builtins__"}:
        assert_close(their_vars[key], our_vars[key], key)
