"""Behaviour of BGEM3 encoding on the tiny checkpoint."""

from __future__ import annotations

import json
import math
import threading
import warnings
from pathlib import Path

import bgem3
import numpy as np
import pytest
import torch
from bgem3 import BGEM3, EncodeOutput, HeadNotLoadedError, SparseVector, TruncationWarning
from bgem3.cli import main
from bgem3.encoder import resolve_device
from bgem3.model import BGEM3Module
from bgem3.scoring import paired_dense_sparse_scores
from bgem3.testing import random_texts

TEXTS = random_texts(30, max_words=60, seed=11) + ["", "東京 です 🙂", "a  b\n\nc\td"]


def _encode_all(model: BGEM3, texts: list[str], **kwargs: object) -> EncodeOutput:
    return model.encode(texts, dense=True, sparse=True, colbert=True, **kwargs)  # type: ignore[arg-type]


def _assert_same(a: EncodeOutput, b: EncodeOutput, atol: float = 1e-5) -> None:
    assert a.dense is not None and b.dense is not None
    np.testing.assert_allclose(a.dense, b.dense, atol=atol)
    assert a.sparse is not None and b.sparse is not None
    for x, y in zip(a.sparse, b.sparse, strict=True):
        assert x.indices.tolist() == y.indices.tolist()
        np.testing.assert_allclose(x.values, y.values, atol=atol)
    assert a.colbert is not None and b.colbert is not None
    for x, y in zip(a.colbert, b.colbert, strict=True):
        np.testing.assert_allclose(x, y, atol=atol)


def test_output_types_shapes_and_dtypes(model: BGEM3) -> None:
    out = _encode_all(model, TEXTS)
    n = len(TEXTS)
    assert isinstance(out, EncodeOutput) and len(out) == n
    assert out.dense is not None and out.dense.shape == (n, model.dense_dim)
    assert out.dense.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out.dense, axis=1), 1.0, atol=1e-5)
    lengths = [len(ids) for ids in model.tokenizer(TEXTS)["input_ids"]]
    assert out.colbert is not None and out.sparse is not None
    for array, length in zip(out.colbert, lengths, strict=True):
        assert array.dtype == np.float32 and array.shape == (length - 1, model.colbert_dim)
        np.testing.assert_allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-5)
    for vector in out.sparse:
        assert vector.indices.dtype == np.int64 and vector.values.dtype == np.float32
        assert np.all(np.diff(vector.indices) > 0)  # sorted, unique
        assert np.all(vector.values > 0)


def test_only_requested_outputs_are_computed(model: BGEM3) -> None:
    out = model.encode(["dog"], dense=False, sparse=True)
    assert out.dense is None and out.colbert is None and out.sparse is not None
    assert model.encode(["dog"]).sparse is None  # FlagEmbedding's default: dense only
    with pytest.raises(ValueError, match="at least one"):
        model.encode(["dog"], dense=False)


def test_batch_result_equals_single_results(model: BGEM3) -> None:
    batch = _encode_all(model, TEXTS, batch_size=7)
    singles = [_encode_all(model, [t]) for t in TEXTS]
    joined = EncodeOutput(
        dense=np.concatenate([s.dense for s in singles]),  # type: ignore[misc]
        sparse=[s.sparse[0] for s in singles],  # type: ignore[index]
        colbert=[s.colbert[0] for s in singles],  # type: ignore[index]
    )
    _assert_same(batch, joined)


def test_short_texts_of_many_lengths_are_packed_and_encode_as_alone(torch_model: BGEM3) -> None:
    texts = random_texts(60, seed=7, min_words=1, max_words=30)
    assert len({len(t.split()) for t in texts}) > 10  # many lengths: many batches unpacked
    batch = _encode_all(torch_model, texts)
    assert torch_model.last_stats.batches <= 2  # packed, rows of 512 tokens (CPU)
    assert torch_model.last_stats.padding_waste < 0.5
    singles = [_encode_all(torch_model, [t]) for t in texts]
    _assert_same(batch, EncodeOutput(
        dense=np.concatenate([s.dense for s in singles]),  # type: ignore[misc]
        sparse=[s.sparse[0] for s in singles],  # type: ignore[index]
        colbert=[s.colbert[0] for s in singles],  # type: ignore[index]
    ))


def test_input_order_is_restored(model: BGEM3) -> None:
    out = _encode_all(model, TEXTS)
    perm = np.random.default_rng(0).permutation(len(TEXTS))
    shuffled = _encode_all(model, [TEXTS[i] for i in perm])
    expected = EncodeOutput(
        dense=out.dense[perm],  # type: ignore[index]
        sparse=[out.sparse[i] for i in perm],  # type: ignore[index]
        colbert=[out.colbert[i] for i in perm],  # type: ignore[index]
    )
    _assert_same(shuffled, expected)


def test_token_budget_and_batch_size_do_not_change_results(tiny_path) -> None:  # type: ignore[no-untyped-def]
    small = BGEM3(tiny_path, device="cpu", batch_tokens=40)
    padded = BGEM3(tiny_path, device="cpu", batch_tokens=100_000, max_padding=1.0)
    assert small.max_padding == 0.0  # the CPU default: equal lengths, the rest packed
    _assert_same(_encode_all(small, TEXTS), _encode_all(padded, TEXTS, batch_size=1000))
    assert padded.last_stats.padding_waste > 0.3
    assert small.last_stats.padding_waste < padded.last_stats.padding_waste / 2
    with pytest.raises(ValueError, match="max_padding"):
        BGEM3(tiny_path, max_padding=1.5)


def test_special_tokens_never_get_lexical_weights(model: BGEM3) -> None:
    texts = ["<s> the </s> <pad> <unk> 🙂 city", "🙂 🙂", ""]
    out = model.encode(texts, dense=False, sparse=True)
    assert out.sparse is not None
    specials = {model.tokenizer.cls_token_id, model.tokenizer.eos_token_id,
                model.tokenizer.pad_token_id, model.tokenizer.unk_token_id}
    for vector in out.sparse:
        assert not specials & set(vector.indices.tolist())
    assert len(out.sparse[2]) == 0  # "<s></s>" has nothing else


def test_empty_string_encodes_as_cls_eos(model: BGEM3) -> None:
    out = _encode_all(model, [""])
    assert out.colbert is not None and out.colbert[0].shape == (1, model.colbert_dim)
    assert out.dense is not None and out.dense.shape == (1, model.dense_dim)


def test_empty_list_gives_empty_outputs_of_the_right_shape(model: BGEM3) -> None:
    out = _encode_all(model, [])
    assert out.dense is not None and out.dense.shape == (0, model.dense_dim)
    assert out.sparse == [] and out.colbert == [] and len(out) == 0


@pytest.mark.parametrize(
    ("texts", "message"),
    [("a bare string", "single str"), (None, "NoneType"), (["ok", 3], r"texts\[1\] must be a str"),
     ([None], r"texts\[0\]"), (b"bytes", "single bytes"), (42, "int")],
)
def test_bad_inputs_raise_type_error(model: BGEM3, texts: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        model.encode(texts)  # type: ignore[arg-type]


def test_generators_and_tuples_are_accepted(model: BGEM3) -> None:
    a = model.encode(("dog", "cat")).dense
    b = model.encode(t for t in ["dog", "cat"]).dense  # type: ignore[arg-type]
    np.testing.assert_array_equal(a, b)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_length", [1, 0, -5, 10_000])
def test_max_length_out_of_range_raises_before_compute(model: BGEM3, max_length: int) -> None:
    with pytest.raises(ValueError, match="max_length"):
        model.encode(["dog"], max_length=max_length)


def test_explicit_zero_lengths_are_errors_not_defaults(model: BGEM3) -> None:
    with pytest.raises(ValueError, match="max_length"):
        model.encode_queries(["dog"], max_length=0)
    with pytest.raises(ValueError, match="max_length"):
        model.compute_score([("a", "b")], max_passage_length=0)


def test_max_length_of_wrong_type_raises(model: BGEM3) -> None:
    with pytest.raises(TypeError, match="max_length"):
        model.encode(["dog"], max_length=12.5)  # type: ignore[arg-type]


def test_truncation_warns_once_with_the_count(model: BGEM3) -> None:
    long_texts = [" ".join(["the"] * 50)] * 3 + ["dog"]
    with pytest.warns(TruncationWarning, match="3 of 4 texts") as record:
        out = model.encode(long_texts, max_length=20, colbert=True)
    assert len(record) == 1
    assert record[0].filename == __file__  # points at the caller's line
    assert out.colbert is not None and out.colbert[0].shape[0] == 19


def test_query_and_document_default_lengths(model: BGEM3) -> None:
    text = " ".join(["the"] * 600)
    with pytest.warns(TruncationWarning, match="max_length=512"):
        q = model.encode_queries([text], colbert=True)
    d = model.encode_documents([text], colbert=True)  # 8192 by default: no warning
    assert q.colbert is not None and q.colbert[0].shape[0] == 511
    assert d.colbert is not None and d.colbert[0].shape[0] == 601
    assert model.query_max_length == 512 and model.document_max_length == 8192


def test_mcls_dense_is_mean_of_cls_states(torch_model: BGEM3) -> None:
    import torch

    text = " ".join(random_texts(1, min_words=600, max_words=600, seed=2))
    out = torch_model.encode_documents([text], mcls=True, sparse=True)
    plain = torch_model.encode_documents([text], sparse=True)
    # reference: insert <s> every 256 content tokens by hand, run the backbone directly
    content = torch_model.tokenizer(text, add_special_tokens=False)["input_ids"]
    cls, eos = torch_model.tokenizer.cls_token_id, torch_model.tokenizer.eos_token_id
    ids, positions = [], []
    for start in range(0, len(content), 256):
        positions.append(len(ids))
        ids += [cls, *content[start : start + 256]]
    ids.append(eos)
    with torch.inference_mode():
        hidden = torch_model.module.backbone(torch.tensor([ids])).last_hidden_state[0]
    expected = torch.nn.functional.normalize(hidden[positions].mean(0), dim=-1).numpy()
    assert out.dense is not None and plain.dense is not None
    np.testing.assert_allclose(out.dense[0], expected, atol=1e-5)
    assert np.abs(out.dense[0] - plain.dense[0]).max() > 1e-3  # it is a different vector
    assert out.sparse[0].to_dict() == plain.sparse[0].to_dict()  # type: ignore[index]
    with pytest.raises(ValueError, match="mcls"):
        torch_model.encode_documents([text], dense=False, sparse=True, mcls=True)


def test_compute_score_modes_and_formulas(model: BGEM3) -> None:
    pairs = [(TEXTS[i], TEXTS[(3 * i + 1) % len(TEXTS)]) for i in range(len(TEXTS))]
    pairs += [pairs[0], (TEXTS[0], TEXTS[5])]  # duplicate pair, repeated query
    w = (0.4, 0.2, 0.4)
    scores = model.compute_score(pairs, weights=w)
    assert list(scores) == ["dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense"]
    assert all(len(v) == len(pairs) and all(type(x) is float for x in v) for v in scores.values())
    q = _encode_all(model, [p[0] for p in pairs], max_length=512)
    p = _encode_all(model, [p[1] for p in pairs])
    for i in range(len(pairs)):
        assert scores["dense"][i] == pytest.approx(float(q.dense[i] @ p.dense[i]), abs=1e-5)  # type: ignore[index]
        assert scores["sparse"][i] == pytest.approx(
            bgem3.lexical_matching_score(q.sparse[i], p.sparse[i]), abs=1e-5)  # type: ignore[index]
        assert scores["colbert"][i] == pytest.approx(
            bgem3.maxsim(q.colbert[i], p.colbert[i]), abs=1e-5)  # type: ignore[index]
        d, s, c = scores["dense"][i], scores["sparse"][i], scores["colbert"][i]
        assert scores["sparse+dense"][i] == pytest.approx((0.2 * s + 0.4 * d) / 0.6)
        assert scores["colbert+sparse+dense"][i] == pytest.approx(0.4 * c + 0.2 * s + 0.4 * d)
    assert all(v[-2] == v[0] for v in scores.values())  # the duplicated pair


def test_compute_score_bad_input(model: BGEM3) -> None:
    with pytest.raises(TypeError, match="wrap a single pair"):
        model.compute_score(("query", "passage"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"pairs\[0\]"):
        model.compute_score([("a", "b", "c")])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"passages\[0\]"):
        model.compute_score([("a", None)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="weights"):
        model.compute_score([("a", "b")], weights=(1.0, 1.0))
    assert model.compute_score([]) == {k: [] for k in bgem3.encoder.SCORE_MODES}


def test_decode_sparse_shows_token_strings(model: BGEM3) -> None:
    out = model.encode(["paris paris london"] * 2 + TEXTS, dense=False, sparse=True)
    assert out.sparse is not None
    decoded = model.decode_sparse(out.sparse)
    assert len(decoded) == len(out.sparse)
    for vector, tokens in zip(out.sparse, decoded, strict=True):
        expected: dict[str, float] = {}
        for i, w in vector.to_dict().items():
            s = model.tokenizer.decode([i])
            expected[s] = max(w, expected.get(s, w))
        assert tokens == expected
    with pytest.raises(TypeError, match="list"):
        model.decode_sparse(out.sparse[0])  # type: ignore[arg-type]


def test_progress_bar_is_switchable(model: BGEM3, capsys: pytest.CaptureFixture[str]) -> None:
    model.encode(["dog", "cat"])
    assert "bgem3" not in capsys.readouterr().err  # small input: no bar by default
    model.encode(["dog", "cat"], show_progress=True)
    assert "bgem3" in capsys.readouterr().err


def test_bfloat16_is_close_to_float32(tiny_path, model: BGEM3) -> None:  # type: ignore[no-untyped-def]
    bf16 = BGEM3(tiny_path, device="cpu", dtype="bf16")
    assert bf16.dtype.is_floating_point and str(bf16.dtype) == "torch.bfloat16"
    a, b = bf16.encode(TEXTS).dense, model.encode(TEXTS).dense
    assert a is not None and b is not None and a.dtype == np.float32
    assert np.min(np.sum(a * b, axis=1)) > 0.999


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_warns_on_a_cpu_that_emulates_it(tiny_path, native: bool,  # type: ignore[no-untyped-def]
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        BGEM3(tiny_path, device="cpu", dtype="bfloat16")
        BGEM3(tiny_path, device="cpu")  # float32: never
    messages = [str(w.message) for w in seen if "bfloat16 on this CPU" in str(w.message)]
    assert len(messages) == (0 if native else 1)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"device": "toaster"}, "device"), ({"dtype": "int4"}, "dtype"),
    ({"batch_tokens": 0}, "batch_tokens"), ({"query_max_length": 9000}, "max_length"),
])
def test_bad_constructor_arguments(tiny_path, kwargs: dict[str, object], error: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=error):
        BGEM3(tiny_path, **kwargs)  # type: ignore[arg-type]


def test_dense_only_model_refuses_heads(tiny_path) -> None:  # type: ignore[no-untyped-def]
    dense_only = BGEM3(tiny_path, device="cpu", dense_only=True)
    assert not dense_only.has_heads and dense_only.colbert_dim is None
    assert dense_only.encode(["dog"]).dense is not None
    with pytest.raises(HeadNotLoadedError, match="dense_only"):
        dense_only.encode(["dog"], sparse=True)
    with pytest.raises(HeadNotLoadedError):
        dense_only.compute_score([("a", "b")])


# ---------------------------------------------------------------- public seams
def test_sparse_vectors_is_the_step_a_subclass_overrides(tiny_path) -> None:  # type: ignore[no-untyped-def]
    class Doubled(BGEM3):
        def sparse_vectors(self, weights, batch):  # type: ignore[no-untyped-def]
            return [SparseVector(v.indices, v.values * 2)
                    for v in super().sparse_vectors(weights, batch)]

    plain = BGEM3(tiny_path, device="cpu").encode(TEXTS, dense=False, sparse=True).sparse
    doubled = Doubled(tiny_path, device="cpu").encode(TEXTS, dense=False, sparse=True).sparse
    assert plain is not None and doubled is not None
    for a, b in zip(plain, doubled, strict=True):
        assert a.indices.tolist() == b.indices.tolist()
        np.testing.assert_allclose(b.values, 2 * a.values)


def test_paired_scores_equal_the_diagonal_of_the_score_matrices(model: BGEM3) -> None:
    q = model.encode_queries(TEXTS[:5], sparse=True)
    p = model.encode_documents(TEXTS[5:12], sparse=True)
    q_of, p_of = np.array([0, 4, 4, 2]), np.array([6, 0, 6, 3])
    dense, sparse = paired_dense_sparse_scores(q, p, q_of, p_of, model.vocab_size)
    np.testing.assert_allclose(dense, bgem3.dense_scores(q.dense, p.dense)[q_of, p_of],  # type: ignore[arg-type]
                               atol=1e-6)
    np.testing.assert_allclose(sparse, bgem3.sparse_scores(q.sparse, p.sparse)[q_of, p_of],  # type: ignore[arg-type]
                               atol=1e-6)
    with pytest.raises(ValueError, match="sparse=True"):
        paired_dense_sparse_scores(model.encode_queries(["a"]), p, q_of[:1], p_of[:1],
                                   model.vocab_size)


def test_resolve_device_and_the_module(model: BGEM3, torch_model: BGEM3) -> None:
    assert resolve_device(" CPU ") == torch.device("cpu") == model.device == torch_model.device
    with pytest.raises(ValueError, match="device"):
        resolve_device("toaster")
    module = torch_model.module
    assert isinstance(module, BGEM3Module)
    assert module.sparse_linear is not None and not module.training
    assert model.module.config.hidden_size == module.config.hidden_size == model.dense_dim
    assert model.module.colbert_dim == module.colbert_dim == model.colbert_dim


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_unavailable_devices_are_value_errors(tiny_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        BGEM3(tiny_path, device="cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="MPS is not available"):
            BGEM3(tiny_path, device="mps")
    with pytest.raises(ValueError, match="device must be"):
        BGEM3(tiny_path, device="tpu")
    assert BGEM3(tiny_path, device="CPU").device.type == "cpu"  # case does not matter
    capsys.readouterr()
    assert main(["encode", "x", "--model", str(tiny_path), "--device", "cuda"]) == 1
    assert capsys.readouterr().err.startswith("bgem3: error: device 'cuda'")


@pytest.mark.parametrize("device", ["xpu", "XPU:1", "hip", "hpu", "meta", "mtia"])
def test_device_types_this_torch_lacks_are_value_errors(
        tiny_path: Path, device: str, capsys: pytest.CaptureFixture[str]) -> None:
    kind = torch.device(device.lower()).type
    probe = getattr(getattr(torch, kind, None), "is_available", None)
    if callable(probe) and probe():
        pytest.skip(f"this machine has a {kind} device")
    with pytest.raises(ValueError, match=rf"device '{device}': .* is not available \(this "
                                         "torch .* was built without it"):
        BGEM3(tiny_path, device=device)
    assert main(["encode", "x", "--model", str(tiny_path), "--device", device]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"bgem3: error: device '{device}'") and len(err.splitlines()) == 1


@pytest.mark.parametrize("flag", ["compile", "dense_only", "local_files_only"])
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_boolean_options_must_be_booleans(tiny_path: Path, flag: str, value: object) -> None:
    with pytest.raises(TypeError, match=rf"{flag} must be True or False, got {value!r}"):
        BGEM3(tiny_path, device="cpu", **{flag: value})  # type: ignore[arg-type]


def test_unpaired_surrogates_are_replaced_everywhere(model: BGEM3, tiny_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.warns(UnicodeWarning, match="unpaired surrogates.*item 1"):
        out = model.encode(["fine text", "bad \ud800 text"], sparse=True)
    expected = model.encode(["fine text", "bad \ufffd text"], sparse=True)
    np.testing.assert_array_equal(out.dense, expected.dense)
    assert out.sparse == expected.sparse
    assert main(["encode", "argv \udcff bytes", "--model", str(tiny_path)]) == 0
    assert json.loads(capsys.readouterr().out)["text"].startswith("argv")


def test_compute_score_takes_colbert_only_weights(model: BGEM3) -> None:
    pairs = [("what is paris", "paris is a city"), ("a dog", "the cat")]
    with pytest.warns(UserWarning, match="sparse\\+dense mode is undefined"):
        scores = model.compute_score(pairs, weights=(0, 0, 1))
    assert scores["colbert+sparse+dense"] == pytest.approx(scores["colbert"])
    assert all(math.isnan(x) for x in scores["sparse+dense"])


def test_truncation_warns_on_every_call(model: BGEM3) -> None:
    long_text = " ".join(["paris"] * 40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            model.encode([long_text], max_length=8)
    assert [w.category for w in caught] == [TruncationWarning] * 3


def test_last_stats_belong_to_each_thread(model: BGEM3) -> None:
    seen: dict[int, int] = {}

    def work(n: int) -> None:
        for _ in range(5):
            model.encode(random_texts(n, seed=n))
            seen[n] = model.last_stats.texts

    threads = [threading.Thread(target=work, args=(n,)) for n in (3, 11)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {3: 3, 11: 11}


def test_lax_inputs_are_refused(model: BGEM3) -> None:
    with pytest.raises(TypeError, match="dense must be True or False"):
        model.encode(["x"], dense="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="order is not the order"):
        model.encode({"a text": 1})  # type: ignore[arg-type]


def test_unknown_encode_options_name_the_method_and_the_options(model: BGEM3) -> None:
    for method in (model.encode, model.encode_queries, model.encode_documents):
        with pytest.raises(TypeError, match=rf"BGEM3\.{method.__name__}\(\) got unexpected "
                                            r"keyword arguments \['colbrt'\]; it takes"):
            method(["a text"], colbrt=True)  # type: ignore[call-arg]
