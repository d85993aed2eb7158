"""Differential tests: FlagEmbedding's BGEM3FlagModel and ours on the same tiny checkpoint."""

from __future__ import annotations

from typing import Any

import bgem3
import numpy as np
import pytest
from bgem3 import BGEM3, EncodeOutput
from bgem3.testing import TINY_WORDS, random_texts

ATOL = 1e-5


def _corpus() -> list[str]:
    words = " ".join(TINY_WORDS[:40])
    return [
        *random_texts(40, max_words=120, seed=21, log_uniform=True),
        "", " ", "the", "the the the the",  # repeats: max weight per id
        "paris", "paris",  # duplicates
        "🙂 emoji 🙂 and ☃ are <unk>",
        "  leading and   inner   runs\n\nof\twhitespace \n",
        "Москва и Berlin 東京 です и في من और के Ünïcödé straße",
        " ".join(["london"] * 62),  # exactly 62 content tokens: 64 with <s> </s>
        " ".join(["london"] * 63),  # one over a max_length of 64
        words * 3,
    ]


CORPUS = _corpus()


def _flag_encode(flag_model: Any, texts: list[str], **kwargs: Any) -> dict[str, Any]:
    return flag_model.encode(texts, return_dense=True, return_sparse=True,
                             return_colbert_vecs=True, **kwargs)


def _assert_parity(ref: dict[str, Any], out: EncodeOutput) -> dict[str, float]:
    assert out.dense is not None and out.sparse is not None and out.colbert is not None
    dense = float(np.abs(ref["dense_vecs"] - out.dense).max())
    sparse = 0.0
    for theirs, ours in zip(ref["lexical_weights"], out.sparse, strict=True):
        assert sorted(int(k) for k in theirs) == ours.indices.tolist()
        for k, v in zip(ours.indices.tolist(), ours.values.tolist(), strict=True):
            sparse = max(sparse, abs(float(theirs[str(k)]) - v))
    colbert = 0.0
    for theirs, ours in zip(ref["colbert_vecs"], out.colbert, strict=True):
        assert theirs.shape == ours.shape
        colbert = max(colbert, float(np.abs(theirs - ours).max()))
    assert max(dense, sparse, colbert) <= ATOL, (dense, sparse, colbert)
    return {"dense": dense, "sparse": sparse, "colbert": colbert}


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize(("flag_batch", "our_batch", "budget", "padding"),
                         [(256, 256, 16384, 1.0), (4, 3, 16384, 0.0), (1, 256, 64, 0.1)])
def test_encode_parity_across_batch_sizes(flag_model: Any, tiny_path: Any, flag_batch: int,
                                          our_batch: int, budget: int, padding: float,
                                          backend: str) -> None:
    model = BGEM3(tiny_path, device="cpu", dtype="float32", batch_tokens=budget,
                  max_padding=padding, backend=backend)
    ref = _flag_encode(flag_model, CORPUS, batch_size=flag_batch, max_length=1024)
    _assert_parity(ref, model.encode(CORPUS, dense=True, sparse=True, colbert=True,
                                     batch_size=our_batch, max_length=1024))


def test_truncation_boundary_parity(flag_model: Any, model: BGEM3) -> None:
    ref = _flag_encode(flag_model, CORPUS, max_length=64)
    with pytest.warns(bgem3.TruncationWarning):
        out = model.encode(CORPUS, dense=True, sparse=True, colbert=True, max_length=64)
    _assert_parity(ref, out)
    assert out.colbert is not None
    assert out.colbert[-3].shape[0] == 63 and out.colbert[-2].shape[0] == 63


def test_queries_and_documents_parity(flag_model: Any, model: BGEM3) -> None:
    ref_q = flag_model.encode_queries(CORPUS, return_dense=True, return_sparse=True,
                                      return_colbert_vecs=True)  # 512 tokens, as ours
    out_q = model.encode_queries(CORPUS, dense=True, sparse=True, colbert=True)
    _assert_parity(ref_q, out_q)
    long_docs = [" ".join(random_texts(1, min_words=n, max_words=n, seed=n)) for n in (900, 3000)]
    ref_d = flag_model.encode_corpus(long_docs, max_length=8192, return_dense=True,
                                     return_sparse=True, return_colbert_vecs=True)
    out_d = model.encode_documents(long_docs, dense=True, sparse=True, colbert=True)
    _assert_parity(ref_d, out_d)


def test_scoring_helpers_parity(flag_model: Any, model: BGEM3) -> None:
    ref = _flag_encode(flag_model, CORPUS[:20])
    out = model.encode(CORPUS[:20], dense=True, sparse=True, colbert=True)
    assert out.sparse is not None and out.colbert is not None
    for i in range(0, 20, 3):
        for j in range(20):
            theirs = flag_model.compute_lexical_matching_score(ref["lexical_weights"][i],
                                                               ref["lexical_weights"][j])
            ours = bgem3.lexical_matching_score(out.sparse[i], out.sparse[j])
            assert ours == pytest.approx(float(theirs), abs=ATOL)
            theirs_c = flag_model.colbert_score(ref["colbert_vecs"][i], ref["colbert_vecs"][j])
            assert bgem3.maxsim(out.colbert[i], out.colbert[j]) == pytest.approx(
                float(theirs_c), abs=ATOL)
    np.testing.assert_allclose(
        bgem3.sparse_scores(out.sparse, out.sparse),
        flag_model.compute_lexical_matching_score(ref["lexical_weights"],
                                                  ref["lexical_weights"]),
        atol=ATOL,
    )


def test_decode_sparse_matches_convert_id_to_token(flag_model: Any, model: BGEM3) -> None:
    ref = _flag_encode(flag_model, CORPUS)
    out = model.encode(CORPUS, dense=False, sparse=True)
    theirs = flag_model.convert_id_to_token(ref["lexical_weights"])
    for a, b in zip(theirs, model.decode_sparse(out.sparse), strict=True):  # type: ignore[arg-type]
        assert set(a) == set(b)


@pytest.mark.parametrize("weights", [(0.4, 0.2, 0.4), (1.0, 1.0, 1.0), (0.0, 1.0, 3.0)])
def test_compute_score_parity(flag_model: Any, model: BGEM3,
                              weights: tuple[float, float, float]) -> None:
    n = len(CORPUS)
    pairs = [(CORPUS[i], CORPUS[(5 * i + 2) % n]) for i in range(n)] + [(CORPUS[0], CORPUS[0])]
    ref = flag_model.compute_score(pairs, batch_size=len(pairs), max_passage_length=8192,
                                   weights_for_different_modes=list(weights))
    ours = model.compute_score(pairs, weights=weights)
    for mode in ("dense", "sparse"):
        np.testing.assert_allclose(ours[mode], ref[mode], atol=ATOL)

    # ColBERT: FlagEmbedding scores zero-padded passages, so a query token whose best real
    # match is negative gets 0 instead when its passage is shorter than the batch's longest.
    q = model.encode_queries([p[0] for p in pairs], colbert=True, dense=False).colbert
    p = model.encode_documents([p[1] for p in pairs], colbert=True, dense=False).colbert
    assert q is not None and p is not None
    longest = max(len(x) for x in p)
    for i in range(len(pairs)):
        best = (q[i] @ p[i].T).max(axis=1)
        assert ours["colbert"][i] == pytest.approx(best.mean(), abs=ATOL)
        padded = len(p[i]) < longest
        expected_flag = np.maximum(best, 0).mean() if padded else best.mean()
        assert ref["colbert"][i] == pytest.approx(expected_flag, abs=ATOL)
        fused = [ours["dense"][i], ours["sparse"][i], expected_flag]
        assert ref["colbert+sparse+dense"][i] == pytest.approx(
            float(np.dot(weights, fused) / sum(weights)), abs=ATOL)
    np.testing.assert_allclose(ours["sparse+dense"], ref["sparse+dense"], atol=ATOL)


def test_compute_score_colbert_padding_difference(tiny_path: Any, tmp_path: Any) -> None:
    """Pairs where FlagEmbedding's zero padding changes the ColBERT score, chosen on purpose."""
    import shutil

    import torch
    from FlagEmbedding import BGEM3FlagModel

    # A zero-bias ColBERT head spreads the token vectors enough for negative best matches.
    path = shutil.copytree(tiny_path, tmp_path / "spread")
    generator = torch.Generator().manual_seed(2)
    torch.save({"weight": torch.randn(32, 32, generator=generator).half(),
                "bias": torch.zeros(32).half()}, path / "colbert_linear.pt")
    model = BGEM3(path, device="cpu")
    flag_model = BGEM3FlagModel(str(path), use_fp16=False, devices="cpu")

    pool = random_texts(60, max_words=40, seed=21, log_uniform=True)
    vectors = model.encode(pool, dense=False, colbert=True).colbert
    assert vectors is not None
    chosen = [(i, j) for i in range(60) for j in range(60)
              if (vectors[i] @ vectors[j].T).max(axis=1).min() < -1e-3][:6]
    assert chosen, "the pool no longer contains a pair with a negative best match"
    pairs = [(pool[i], pool[j]) for i, j in chosen]
    pairs.append((pool[0], " ".join(["london"] * 100)))  # longest passage: the others pad
    ref = flag_model.compute_score(pairs, batch_size=len(pairs), max_passage_length=8192)
    ours = model.compute_score(pairs)
    for k, (i, j) in enumerate(chosen):
        best = (vectors[i] @ vectors[j].T).max(axis=1)
        assert ours["colbert"][k] == pytest.approx(best.mean(), abs=ATOL)
        assert ref["colbert"][k] == pytest.approx(np.maximum(best, 0).mean(), abs=ATOL)
        assert ref["colbert"][k] > ours["colbert"][k] + 1e-4


def test_long_runs_without_spaces_parity(tiny_path: Any, tmp_path: Any) -> None:
    """Texts past the length at which we cut before tokenizing, without a space to cut at."""
    from FlagEmbedding import BGEM3FlagModel

    from tests.core.tokenizer_data import TIED_RUNS, tied_runs_checkpoint

    path = tied_runs_checkpoint(tiny_path, tmp_path / "tied")
    texts = list(TIED_RUNS.values())
    flag_model = BGEM3FlagModel(str(path), use_fp16=False, devices="cpu")
    ref = _flag_encode(flag_model, texts, max_length=128)
    with pytest.warns(bgem3.TruncationWarning):
        out = BGEM3(path, device="cpu", dtype="float32").encode(
            texts, dense=True, sparse=True, colbert=True, max_length=128)
    _assert_parity(ref, out)
