from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bgem3.batching import (
    CHARS_PER_TOKEN,
    MCLS_STRIDE,
    M3Tokenizer,
    TokenizerSpec,
    collate,
    collate_packed,
    lexical_weights,
    load_tokenizer,
    plan_batches,
    plan_packed,
    tokenize,
    unique_texts,
)
from bgem3.errors import CheckpointError, TruncationWarning
from bgem3.testing import random_texts

from tests.core.tokenizer_data import TIED_RUNS, tied_runs_checkpoint


@pytest.fixture(scope="module")
def tokenizer(tiny_path: Path) -> M3Tokenizer:
    return load_tokenizer(tiny_path)


@pytest.mark.parametrize(("budget", "rows", "waste"),
                         [(64, 256, 1.0), (1000, 3, 1.0), (10, 256, 1.0), (5000, 256, 0.1),
                          (5000, 256, 0.0)])
def test_plan_batches_cover_every_index_once_within_budget(budget: int, rows: int,
                                                          waste: float) -> None:
    lengths = np.random.default_rng(0).integers(2, 50, size=200)
    batches = plan_batches(lengths, budget, rows, max_waste=waste)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(200))
    for batch in batches:
        longest = lengths[batch].max()
        assert lengths[batch[0]] == longest  # longest first: padded width is known
        assert len(batch) <= rows
        assert len(batch) == 1 or len(batch) * longest <= budget
        assert 1 - lengths[batch].sum() / (len(batch) * longest) <= waste + 1e-9
    # longest first across batches too, so padding waste stays small
    assert np.all(np.diff(lengths[flat]) <= 0)


def test_plan_batches_of_nothing() -> None:
    assert plan_batches(np.zeros(0, np.int64), 100, 10) == []


def test_tokenize_equals_transformers_truncation(tokenizer: M3Tokenizer) -> None:
    texts = random_texts(40, max_words=40, seed=5) + ["", "  spaced \n out  ", "東京 🙂"]
    for max_length in (2, 3, 17, 64):
        ours = tokenize(tokenizer.backend, texts, tokenizer.spec, max_length)
        ref = tokenizer.hf(texts, truncation=True, max_length=max_length)["input_ids"]
        assert [a.tolist() for a in ours.ids] == ref
        full = tokenizer.hf(texts)["input_ids"]
        assert ours.n_truncated == sum(len(ids) > max_length for ids in full)
        assert ours.lengths.tolist() == [len(ids) for ids in ref]


def test_mcls_inserts_a_cls_before_every_chunk(tokenizer: M3Tokenizer) -> None:
    spec = tokenizer.spec
    text = " ".join(["the"] * (2 * MCLS_STRIDE + 10))  # "▁the" is one token
    plain = tokenize(tokenizer.backend, [text], spec, 8192).ids[0]
    mcls = tokenize(tokenizer.backend, [text], spec, 8192, mcls=True)
    ids, positions = mcls.ids[0], mcls.cls_positions[0]  # type: ignore[index]
    assert positions.tolist() == [0, MCLS_STRIDE + 1, 2 * (MCLS_STRIDE + 1)]
    assert (ids[positions] == spec.cls_id).all()
    assert np.delete(ids, positions).tolist() == plain[1:].tolist()  # same content and </s>


@pytest.mark.parametrize("max_length", [2, 3, 258, 259, 300, 515])
def test_mcls_truncation_fills_but_never_exceeds_max_length(tokenizer: M3Tokenizer,
                                                            max_length: int) -> None:
    text = " ".join(["the"] * 2000)
    out = tokenize(tokenizer.backend, [text], tokenizer.spec, max_length, mcls=True)
    assert out.n_truncated == 1
    assert max_length - 1 <= out.lengths[0] <= max_length
    assert out.ids[0][-1] == tokenizer.spec.eos_id


def test_collate_pads_and_masks(tokenizer: M3Tokenizer) -> None:
    tokenized = tokenize(tokenizer.backend, ["the city of paris", "dog"], tokenizer.spec, 64)
    batch = collate(tokenized, np.array([0, 1]), tokenizer.spec.pad_id)
    assert batch.input_ids.shape == (2, 6)
    assert batch.attention_mask.tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    assert (batch.input_ids[1, 3:] == tokenizer.spec.pad_id).all()


def test_the_loaded_tokenizer_is_the_one_the_model_encodes_with(tokenizer: M3Tokenizer,
                                                                model) -> None:  # type: ignore[no-untyped-def]
    texts = random_texts(20, max_words=30, seed=8)
    ours = tokenizer.tokenize(texts, 16)
    with pytest.warns(TruncationWarning):
        encoded = model.encode(texts, max_length=16)
    assert ours.truncated.any() and ours.truncated.tolist() == encoded.truncated.tolist()
    assert ours.lengths.tolist() == encoded.tokens.tolist()
    assert tokenizer.tokenize(texts, 16, mcls=True).cls_positions is not None
    assert tokenizer.spec.unused_ids == (tokenizer.hf.cls_token_id, tokenizer.hf.eos_token_id,
                                         tokenizer.hf.pad_token_id, tokenizer.hf.unk_token_id)


def test_load_tokenizer_errors_name_the_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot load the tokenizer"):
        load_tokenizer(tmp_path / "nothing-here")


def test_unique_texts_keep_the_first_seen_order() -> None:
    distinct, inverse = unique_texts(["b", "a", "b", "c", "a"])
    assert distinct == ["b", "a", "c"] and inverse.tolist() == [0, 1, 0, 2, 1]
    assert [distinct[i] for i in inverse] == ["b", "a", "b", "c", "a"]
    empty, none = unique_texts([])
    assert empty == [] and none.dtype == np.int64 and none.shape == (0,)


def test_lexical_weights_keep_the_largest_weight_per_id_and_drop_specials() -> None:
    ids = np.array([[0, 7, 5, 7, 9, 2], [0, 5, 2, 1, 1, 1]])
    weights = np.array([[0.9, 0.2, 0.0, 0.4, 0.3, 0.9],
                        [0.9, 0.5, 0.9, 0.8, 0.8, 0.8]], dtype=np.float32)
    first, second = lexical_weights(weights, ids, (0, 1, 2, 3))
    assert first.to_dict() == pytest.approx({7: 0.4, 9: 0.3})
    assert second.to_dict() == pytest.approx({5: 0.5})
    assert lexical_weights(weights[:0], ids[:0], (0, 1, 2, 3)) == []


class _Recording:
    """A tokenizer that records the length of every text it is given."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.seen: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def encode_batch(self, texts: list[str], add_special_tokens: bool = False) -> Any:
        self.seen.extend(len(t) for t in texts)
        return self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)


def _whole(backend: Any, text: str, budget: int) -> list[int]:
    return list(backend.encode_batch([text], add_special_tokens=False)[0].ids[:budget])


def test_a_huge_text_is_tokenized_only_as_far_as_needed(tiny_path: Path) -> None:
    tokenizer = load_tokenizer(tiny_path)
    backend, spec = tokenizer.backend, tokenizer.spec
    recording = _Recording(backend)
    huge = " ".join(random_texts(20000, min_words=20, max_words=40, seed=2))  # ~4 MB
    bounded = tokenize(recording, [huge, "short"], spec, 512)
    assert max(recording.seen) < 20 * 512 * 2
    assert bounded.ids[0][1:-1].tolist() == _whole(backend, huge, 510)
    assert bounded.n_truncated == 1
    spaces = "word " + " " * 100000 + "end " * 600  # long whitespace: the cut is undone
    assert tokenize(backend, [spaces], spec, 512).ids[0][1:-1].tolist() == \
        _whole(backend, spaces, 510)
    # runs without spaces, verified rather than read whole (this vocabulary has no ties)
    for run in ("日本東京" * 250000, "QUJDRUZH" * 100000, "word " + "a" * 10**6):
        recording.seen.clear()
        bounded = tokenize(recording, [run], spec, 512)
        assert bounded.ids[0][1:-1].tolist() == _whole(backend, run, 510)
        assert bounded.n_truncated == 1 and max(recording.seen) < 20 * 512 * 2


@pytest.fixture(scope="module")
def tied(tiny_path: Path, tmp_path_factory: pytest.TempPathFactory) -> M3Tokenizer:
    return load_tokenizer(tied_runs_checkpoint(tiny_path,
                                               tmp_path_factory.mktemp("tied") / "tied"))


@pytest.mark.parametrize("script", list(TIED_RUNS))
def test_long_runs_without_spaces_keep_the_whole_texts_tokens(tied: M3Tokenizer,
                                                              script: str) -> None:
    text, budget = TIED_RUNS[script], 126
    whole = _whole(tied.backend, text, budget)
    # the premise: cut at the length limit, the run starts with other tokens
    assert _whole(tied.backend, text[: CHARS_PER_TOKEN * (budget + 1)], budget) != whole
    out = tokenize(tied.backend, [text, "paris"], tied.spec, budget + 2)
    assert out.ids[0][1:-1].tolist() == whole and out.n_truncated == 1
    assert tied.hf(text, truncation=True, max_length=budget + 2)["input_ids"] == \
        out.ids[0].tolist()


def _normalizing_tokenizer() -> Any:
    """Unigram after NFKC (which expands ㍿ and composes e + U+0301), with tied pieces."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import Unigram

    pieces: dict[str, float] = {"<s>": 0.0, "<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "▁": -4.0}
    for char in "ab日本ア株式会社eé":
        pieces[char], pieces["▁" + char] = -3.5, -3.0
    pieces.update({"aa": -7.0, "aaa": -10.5, "ab": -7.0, "ba": -7.0, "日本": -7.0,
                   "本日": -7.0, "株式会社": -9.0, "アア": -7.0})
    backend = Tokenizer(Unigram(list(pieces.items()), unk_id=3, byte_fallback=False))
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.add_special_tokens(["<s>", "</s>"])
    return backend


def test_random_long_texts_keep_the_whole_texts_tokens() -> None:
    backend = _normalizing_tokenizer()
    spec = TokenizerSpec(cls_id=0, eos_id=2, pad_id=1, unk_id=3)
    rng = random.Random(0)
    parts = ["a", "b", "日", "本", "ｱ", "㍿", "e\u0301", " ", "<s>"]
    for _ in range(200):
        weights = [rng.random() for _ in parts]
        weights[parts.index(" ")] *= rng.choice([0.0, 0.0, 0.01])  # mostly no space at all
        text = "".join(rng.choices(parts, weights, k=rng.randint(300, 3000)))
        if rng.random() < 0.3:
            text = rng.choice(["a", "ab", "日本"]) * rng.randint(500, 2000)
        max_length = rng.choice([8, 16, 64])
        out = tokenize(backend, [text], spec, max_length)
        assert out.ids[0][1:-1].tolist() == _whole(backend, text, max_length - 2), text[:40]


def test_plan_packed_merges_only_small_batches_and_respects_the_budget() -> None:
    lengths = np.random.default_rng(1).integers(2, 60, size=300)
    lengths[:5] = 600  # these batches stay as they are
    batches = plan_batches(lengths, 4096, 256, max_waste=0.0)
    kept, packed = plan_packed(batches, lengths, 128, 1024)
    assert sorted(np.concatenate(kept + packed).tolist()) == list(range(300))
    assert all(len(b) * lengths[b[0]] >= 128 for b in kept)
    assert any(0 in b for b in kept) and len(packed) > 1
    for group in packed:
        assert (np.diff(lengths[group]) <= 0).all()  # longest first
        rows, fill = 1, 0
        for length in lengths[group].tolist():
            rows, fill = (rows + 1, length) if fill + length > 128 else (rows, fill + length)
        assert rows <= 1024 // 128
    assert plan_packed(batches[:1], lengths, 128, 1024) == (batches[:1], [])
    _, capped = plan_packed(batches, lengths, 128, 1024, max_texts=5)
    assert max(len(group) for group in capped) == 5  # batch_size still caps the texts
    assert sorted(np.concatenate(capped).tolist()) == sorted(np.concatenate(packed).tolist())


def test_collate_packed_lays_each_sequence_out_alone(tokenizer: M3Tokenizer) -> None:
    texts = random_texts(40, seed=3, min_words=1, max_words=12)
    tokenized = tokenize(tokenizer.backend, texts, tokenizer.spec, 64)
    order = np.argsort(-tokenized.lengths, kind="stable")
    batch = collate_packed(tokenized, order, tokenizer.spec.pad_id, 64, first_position=2)
    packed = batch.packed
    assert packed is not None and packed.input_ids.shape[0] > 1  # several rows
    assert packed.input_ids.shape[1] <= 64
    real = batch.attention_mask.astype(bool)
    # every real position of the padded batch is found again in the packed rows
    np.testing.assert_array_equal(packed.input_ids.reshape(-1)[packed.gather][real],
                                  batch.input_ids[real])
    segments = packed.segments.reshape(-1)[packed.gather]
    assert (segments == np.arange(len(order))[:, None])[real].all()
    positions = packed.position_ids.reshape(-1)[packed.gather]
    expected = np.broadcast_to(np.arange(batch.input_ids.shape[1]) + 2, positions.shape)
    np.testing.assert_array_equal(positions[real], expected[real])
    assert int((packed.segments >= 0).sum()) == int(tokenized.lengths.sum())


def test_tokenizer_pipeline_is_cached_and_read_back_without_transformers(
        tiny_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bgem3.batching import load_tokenizer
    from transformers import AutoTokenizer

    monkeypatch.setenv("BGEM3_CACHE_DIR", str(tmp_path / "cache"))
    built = load_tokenizer(tiny_path)  # transformers builds it, and it is kept
    (entry,) = (tmp_path / "cache" / "tokenizers").iterdir()
    texts = [*random_texts(50, max_words=80, seed=31), "", "  x  ", "🙂 Ünïcödé <mask> </s>"]
    want = built.tokenize(texts, 512)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("transformers' tokenizer was loaded")

    with monkeypatch.context() as patch:
        patch.setattr(AutoTokenizer, "from_pretrained", refuse)
        cached = load_tokenizer(tiny_path)
        got = cached.tokenize(texts, 512)
    assert cached.spec == built.spec
    assert [x.tolist() for x in got.ids] == [x.tolist() for x in want.ids]
    np.testing.assert_array_equal(got.lengths, want.lengths)
    assert cached.hf.convert_ids_to_tokens([5]) == built.hf.convert_ids_to_tokens([5])  # lazy
    entry.write_text("{not json")  # a damaged entry is built again
    again = load_tokenizer(tiny_path)
    assert [x.tolist() for x in again.tokenize(texts, 512).ids] == [x.tolist() for x in want.ids]
    assert entry.read_text().startswith('{"pipeline"')
