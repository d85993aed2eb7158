"""Encoder behaviour: devices, surrogates, compute_score weights, warnings, threads, inputs.

Moved from tests/core/test_hardening.py unchanged; tests/core/test_encoder.py is not
this session's file: merge these tests into it and delete this file.
"""

from __future__ import annotations

import json
import math
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from bgem3 import BGEM3, TruncationWarning
from bgem3.cli import main
from bgem3.testing import random_texts


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
