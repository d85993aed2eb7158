"""Fine-tuning: FlagEmbedding's loss, training runs, saved checkpoints, mining, bad data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bgem3
import numpy as np
import pytest
import torch
from bgem3.batching import load_tokenizer
from bgem3.checkpoint import resolve_checkpoint
from bgem3.cli import main
from bgem3.errors import CheckpointNotFoundError, DatasetError
from bgem3.model import BGEM3Module, load_module
from bgem3.testing import build_tiny_checkpoint, random_texts
from bgem3.train import FinetuneSettings, finetune, mine_negatives
from bgem3.train.finetuning import _resume_blocker
from bgem3.train.model import M3ForTraining
from safetensors.torch import load_file

from tests.core.train_data import small_run, write_jsonl

# ---------------------------------------------------------------- data


def _rows(n: int = 48, seed: int = 1, negatives: int = 3) -> list[dict]:
    texts = random_texts(4 * n, min_words=6, max_words=30, seed=seed)
    rows = []
    for i in range(n):
        doc = texts[i]
        negs = [texts[n + (i * 7 + j * 13) % (3 * n)] for j in range(negatives)]
        rows.append({"query": " ".join(doc.split()[:4]), "pos": [doc], "neg": negs})
    return rows




@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", _rows())


def _settings(tiny_path: Path, train_file: Path, out: Path, **kw: object) -> FinetuneSettings:
    return small_run(tiny_path, train_file, out, **kw)


def _network(tiny_path: Path) -> BGEM3Module:
    """A fresh fp32 copy of the tiny network, loaded as finetune() loads it."""
    return load_module(resolve_checkpoint(tiny_path), device=torch.device("cpu"),
                       dtype=torch.float32)


# ---------------------------------------------------------------- the loss vs FlagEmbedding
def _flag_batch(tiny_path: Path, b: int = 3, g: int = 4):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_path))
    texts = random_texts(b + b * g, min_words=2, max_words=20, seed=5)
    queries = tokenizer(texts[:b], padding=True, return_tensors="pt")
    passages = tokenizer(texts[b:], padding=True, return_tensors="pt")
    return tokenizer, dict(queries), dict(passages)


@pytest.mark.parametrize("self_distill", [False, True])
@pytest.mark.parametrize("teacher", [None, "kl_div", "m3_kd_loss"])
def test_loss_and_gradients_equal_flagembedding(tiny_path: Path, self_distill: bool,
                                                teacher: str | None) -> None:
    pytest.importorskip("FlagEmbedding")  # test-lowest-core runs without it
    from FlagEmbedding.finetune.embedder.encoder_only.m3 import (
        EncoderOnlyEmbedderM3Model,
        EncoderOnlyEmbedderM3Runner,
    )

    b, g = 3, 4
    tokenizer, queries, passages = _flag_batch(tiny_path, b, g)
    scores = np.random.default_rng(0).normal(size=(b, g))
    flag = EncoderOnlyEmbedderM3Model(
        EncoderOnlyEmbedderM3Runner.get_model(str(tiny_path)), tokenizer=tokenizer,
        temperature=0.02, normalize_embeddings=True, unified_finetuning=True,
        use_self_distill=self_distill, kd_loss_type=teacher or "kl_div").double()
    flag.train()
    flag.model.eval()  # the loss path on, dropout off
    expected = flag(queries=queries, passages=passages,
                    teacher_scores=None if teacher is None else scores.ravel().tolist()).loss
    expected.backward()

    ours = M3ForTraining(_network(tiny_path), load_tokenizer(tiny_path).spec, group_size=g,
                         self_distill=self_distill, kd_loss=teacher or "kl_div").double()
    ours.train()
    ours.m3.backbone.eval()
    out = ours(query_ids=queries["input_ids"], query_mask=queries["attention_mask"],
               passage_ids=passages["input_ids"], passage_mask=passages["attention_mask"],
               teacher_scores=None if teacher is None else torch.tensor(scores))
    out.loss.backward()
    assert abs(out.loss.item() - expected.item()) < 1e-6
    theirs = dict(flag.model.named_parameters())
    for name, param in ours.m3.backbone.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(param.grad, theirs[name].grad, atol=1e-10, rtol=1e-8)
    for head in ("colbert_linear", "sparse_linear"):
        torch.testing.assert_close(getattr(ours.m3, head).weight.grad,
                                   getattr(flag, head).weight.grad, atol=1e-10, rtol=1e-8)
    assert {"dense", "sparse", "colbert", "ensemble"} <= set(out.parts)
    assert ("distill_dense" in out.parts) == self_distill


def test_dense_only_loss_equals_flagembedding_dense_finetuning(tiny_path: Path) -> None:
    pytest.importorskip("FlagEmbedding")  # test-lowest-core runs without it
    from FlagEmbedding.finetune.embedder.encoder_only.m3 import (
        EncoderOnlyEmbedderM3Model,
        EncoderOnlyEmbedderM3Runner,
    )

    tokenizer, queries, passages = _flag_batch(tiny_path)
    flag = EncoderOnlyEmbedderM3Model(
        EncoderOnlyEmbedderM3Runner.get_model(str(tiny_path)), tokenizer=tokenizer,
        temperature=0.02, normalize_embeddings=True, unified_finetuning=False).double()
    flag.train()
    flag.model.eval()
    expected = flag(queries=queries, passages=passages).loss
    ours = M3ForTraining(_network(tiny_path), load_tokenizer(tiny_path).spec, group_size=4,
                         heads=["dense"]).double()
    ours.m3.backbone.eval()
    out = ours(query_ids=queries["input_ids"], query_mask=queries["attention_mask"],
               passage_ids=passages["input_ids"], passage_mask=passages["attention_mask"])
    assert abs(out.loss.item() - expected.item()) < 1e-6
    assert set(out.parts) == {"dense"}


def test_group_only_batches_score_each_query_on_its_own_group(tiny_path: Path) -> None:
    """FlagEmbedding #1410: group-only training must equal per-query training."""
    b, g = 3, 4
    _, queries, passages = _flag_batch(tiny_path, b, g)
    ours = M3ForTraining(_network(tiny_path), load_tokenizer(tiny_path).spec, group_size=g,
                         in_batch_negatives=False)
    ours.m3.backbone.eval()
    batch = ours(query_ids=queries["input_ids"], query_mask=queries["attention_mask"],
                 passage_ids=passages["input_ids"], passage_mask=passages["attention_mask"])
    singles = []
    for i in range(b):
        q = slice(i, i + 1)
        p = slice(i * g, (i + 1) * g)
        qw = int(queries["attention_mask"][q].sum())
        pw = int(passages["attention_mask"][p].sum(1).max())
        singles.append(float(ours(
            query_ids=queries["input_ids"][q, :qw], query_mask=queries["attention_mask"][q, :qw],
            passage_ids=passages["input_ids"][p, :pw],
            passage_mask=passages["attention_mask"][p, :pw]).loss))
    assert float(batch.loss) == pytest.approx(np.mean(singles), rel=1e-4)
    assert float(batch.parts["ensemble"]) > 0


# ---------------------------------------------------------------- training runs
@pytest.fixture(scope="module")
def trained(tiny_path: Path, train_file: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Path:
    out = tmp_path_factory.mktemp("ft") / "out"
    return finetune(_settings(tiny_path, train_file, out, max_steps=12))


def test_loss_decreases_and_every_part_is_logged(trained: Path) -> None:
    settings = json.loads((trained / "bgem3_finetune.json").read_text())
    log = settings["log"]
    assert [e["step"] for e in log] == [2, 4, 6, 8, 10, 12]
    assert np.mean([e["loss"] for e in log[-2:]]) < np.mean([e["loss"] for e in log[:2]])
    for part in ("dense", "sparse", "colbert", "ensemble", "distill_dense", "distill_sparse",
                 "distill_colbert"):
        assert all(f"loss_{part}" in e for e in log), part
    assert all(0 < e["sparse_active"] <= 1 for e in log)
    assert settings["heads"] == ["dense", "sparse", "colbert"] and settings["steps"] == 12


def test_output_loads_in_bgem3_and_flagembedding_with_equal_outputs(trained: Path,
                                                                    tiny_path: Path) -> None:
    pytest.importorskip("FlagEmbedding")  # test-lowest-core runs without it
    from FlagEmbedding import BGEM3FlagModel

    assert not list(trained.glob("*.bin"))  # no pickled training_args.bin
    texts = random_texts(5, min_words=3, max_words=25, seed=9)
    ours = bgem3.BGEM3(trained, device="cpu", dtype="float32")
    out = ours.encode(texts, dense=True, sparse=True, colbert=True)
    flag = BGEM3FlagModel(str(trained), use_fp16=False, devices="cpu")
    ref = flag.encode(texts, batch_size=2, return_dense=True, return_sparse=True,
                      return_colbert_vecs=True)
    np.testing.assert_allclose(out.dense, ref["dense_vecs"], atol=1e-5)
    for mine, theirs in zip(out.sparse, ref["lexical_weights"], strict=True):
        expected = {int(k): float(v) for k, v in theirs.items()}
        assert mine.to_dict() == pytest.approx(expected, abs=1e-5)
    for mine, theirs in zip(out.colbert, ref["colbert_vecs"], strict=True):
        np.testing.assert_allclose(mine, theirs, atol=1e-5)
    before = bgem3.BGEM3(tiny_path, device="cpu").encode(texts).dense
    assert not np.allclose(before, out.dense)  # it did train


def test_frozen_heads_are_bit_identical_and_untrained_heads_warn(
        tiny_path: Path, train_file: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"colbert_linear.pt and sparse_linear.pt were not "
                                         r"trained \(--heads dense\)"):
        out = finetune(_settings(tiny_path, train_file, tmp_path / "dense", max_steps=3,
                                 heads=["dense"]))
    for head in ("colbert_linear.pt", "sparse_linear.pt"):
        before = torch.load(tiny_path / head, weights_only=True)
        after = torch.load(out / head, weights_only=True)
        for key in before:
            assert torch.equal(before[key].float(), after[key]), head
    assert not torch.equal(load_file(str(tiny_path / "model.safetensors"))[
        "encoder.layer.0.attention.self.query.weight"], load_file(str(out / "model.safetensors"))[
        "encoder.layer.0.attention.self.query.weight"])

    frozen = finetune(_settings(tiny_path, train_file, tmp_path / "heads", max_steps=3,
                                heads=["sparse", "colbert"], freeze_backbone=True))
    for key, value in load_file(str(tiny_path / "model.safetensors")).items():
        assert torch.equal(value, load_file(str(frozen / "model.safetensors"))[key]), key


def test_same_seed_same_curve_and_a_stopped_run_resumes(tiny_path: Path, train_file: Path,
                                                        tmp_path: Path) -> None:
    from transformers import TrainerCallback

    full = finetune(_settings(tiny_path, train_file, tmp_path / "a", max_steps=6,
                              logging_steps=1, save_steps=2))
    again = finetune(_settings(tiny_path, train_file, tmp_path / "b", max_steps=6,
                               logging_steps=1, save_steps=2))
    curve = [e["loss"] for e in json.loads((full / "bgem3_finetune.json").read_text())["log"]]
    assert curve == [e["loss"] for e in
                     json.loads((again / "bgem3_finetune.json").read_text())["log"]]

    class StopAt4(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if state.global_step == 4:
                control.should_training_stop = True

    stopped = _settings(tiny_path, train_file, tmp_path / "c", max_steps=6, logging_steps=1,
                        save_steps=2)
    finetune(stopped, callbacks=[StopAt4()])
    assert (tmp_path / "c" / "checkpoints" / "checkpoint-4").is_dir()
    stopped.resume = True
    if blocker := _resume_blocker():  # transformers >= 4.50 with torch < 2.6: said up front
        with pytest.raises(ValueError, match=r"cannot resume: transformers .* torch >= 2\.6"):
            finetune(stopped)
        pytest.skip(blocker)
    resumed = finetune(stopped)
    log = json.loads((resumed / "bgem3_finetune.json").read_text())["log"]
    assert [e["step"] for e in log][-2:] == [5, 6]
    assert [e["loss"] for e in log][-2:] == pytest.approx(curve[-2:], rel=1e-5)
    for key, value in load_file(str(full / "model.safetensors")).items():
        torch.testing.assert_close(value, load_file(str(resumed / "model.safetensors"))[key],
                                   atol=1e-6, rtol=1e-5)


def test_gradient_caching_gives_the_same_gradients(tiny_path: Path, train_file: Path,
                                                   tmp_path: Path) -> None:
    from bgem3.train._hf_trainer import grad_cache_step
    from bgem3.train.data import TrainingSet, collate_groups, read_training_data

    tokenizer = load_tokenizer(tiny_path)
    train_set = TrainingSet(read_training_data(train_file), tokenizer.backend, tokenizer.spec,
                            4, 64, 64)
    batch = collate_groups(train_set, list(range(6)), tokenizer.spec.pad_id)

    def grads(cached: bool) -> dict[str, torch.Tensor]:
        network = M3ForTraining(_network(tiny_path), tokenizer.spec, group_size=4).double()
        if cached:
            out = grad_cache_step(network, network, batch, chunk=5)
        else:
            out = network(**batch)
            out.loss.backward()
        assert float(out.loss) > 0
        return {k: p.grad.clone() for k, p in network.named_parameters() if p.grad is not None}

    plain, cached = grads(False), grads(True)
    assert plain.keys() == cached.keys() and len(plain) > 30
    for name, grad in plain.items():
        torch.testing.assert_close(cached[name], grad, atol=1e-10, rtol=1e-7, msg=name)

    run = finetune(_settings(tiny_path, train_file, tmp_path / "cached", max_steps=2,
                             logging_steps=1, grad_cache=5))
    reference = finetune(_settings(tiny_path, train_file, tmp_path / "plain", max_steps=2,
                                   logging_steps=1))
    first = [json.loads((p / "bgem3_finetune.json").read_text())["log"][0]["loss"]
             for p in (run, reference)]
    assert first[0] == pytest.approx(first[1], rel=1e-5)


def test_init_heads_on_a_backbone_without_heads(tmp_path: Path, train_file: Path) -> None:
    backbone = build_tiny_checkpoint(tmp_path / "backbone", heads=False)
    with pytest.raises(CheckpointNotFoundError, match="--init-heads"):
        finetune(_settings(backbone, train_file, tmp_path / "x"))
    out = finetune(_settings(backbone, train_file, tmp_path / "out", max_steps=3,
                             init_heads=True, colbert_dim=16))
    model = bgem3.BGEM3(out, device="cpu")
    assert model.has_heads and model.colbert_dim == 16
    with pytest.raises(ValueError, match="drop --init-heads"):
        finetune(_settings(out, train_file, tmp_path / "y", init_heads=True))


def test_two_processes_with_torchrun(tiny_path: Path, train_file: Path, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", "29533", "-m", "bgem3",
         "finetune", "--model", str(tiny_path), "--train-data", str(train_file),
         "--output", str(tmp_path / "ddp"), "--group-size", "2", "--batch-size", "4",
         "--max-steps", "3", "--logging-steps", "1", "--device", "cpu", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = json.loads((tmp_path / "ddp" / "bgem3_finetune.json").read_text())["log"]
    assert [e["step"] for e in log] == [1, 2, 3]
    assert bgem3.BGEM3(tmp_path / "ddp", device="cpu").has_heads


# ---------------------------------------------------------------- mining
def test_mine_negatives_from_a_rank_range(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = _rows(30, seed=4)
    rows[0]["pos_scores"], rows[0]["neg_scores"] = [1.0], [0.1, 0.2, 0.3]
    for row in rows[1:]:
        row["pos_scores"], row["neg_scores"] = [1.0], [0.0, 0.0, 0.0]
    rows[3]["extra"] = {"kept": True}
    source = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.warns(UserWarning, match="removed the teacher scores"):
        report = mine_negatives(source, model, tmp_path / "mined.jsonl", rank_range=(2, 12),
                                num=5, seed=1)
    mined = [json.loads(line) for line in (tmp_path / "mined.jsonl").read_text().splitlines()]
    assert report.queries == 30 and len(mined) == 30 and report.dropped_scores == 30
    assert mined[3]["extra"] == {"kept": True}
    corpus = sorted({t for r in rows for t in (*r["pos"], *r["neg"])})
    dense = model.encode_documents(corpus).dense
    for row, out in zip(rows, mined, strict=True):
        assert "pos_scores" not in out and "neg_scores" not in out
        assert out["pos"] == row["pos"] and len(out["neg"]) == 5
        assert not set(out["neg"]) & set(row["pos"])
        order = np.argsort(-(dense @ model.encode_queries([row["query"]]).dense[0]),
                           kind="stable")
        ranks = {corpus[i]: r for r, i in enumerate(order)}
        assert all(2 <= ranks[t] < 12 for t in out["neg"])
    hybrid = mine_negatives(source, model, tmp_path / "hybrid.jsonl", rank_range=(0, 10),
                            num=3, mode="hybrid")
    assert hybrid.negatives == 3


def test_mine_negatives_command(tiny_path: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    source = write_jsonl(tmp_path / "train.jsonl", _rows(20, seed=2))
    assert main(["mine-negatives", str(source), "--model", str(tiny_path), "--output",
                 str(tmp_path / "out.jsonl"), "--range", "1-8", "--num", "4"]) == 0
    assert "mined 4.0 negatives per query for 20 queries" in capsys.readouterr().out
    assert main(["mine-negatives", str(source), "--model", str(tiny_path), "--output",
                 str(tmp_path / "out.jsonl"), "--range", "8"]) == 1
    assert "--range wants START-END" in capsys.readouterr().err


def test_finetune_command(tiny_path: Path, train_file: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["finetune", "--model", str(tiny_path), "--train-data", str(train_file),
                 "--output", str(tmp_path / "cli"), "--heads", "dense,colbert",
                 "--no-self-distill", "--group-size", "2", "--batch-size", "4",
                 "--max-steps", "2", "--device", "cpu", "--no-progress"]) == 0
    assert "fine-tuned checkpoint in" in capsys.readouterr().out
    settings = json.loads((tmp_path / "cli" / "bgem3_finetune.json").read_text())
    assert settings["heads"] == ["dense", "colbert"] and settings["self_distill"] is False


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(("line", "message"), [
    ("not json", r":2: not JSON"),
    ('{"pos": ["a"], "neg": ["b"]}', r":2: 'query' must be a non-empty string"),
    ('{"query": "q", "pos": [], "neg": ["b"]}', r":2: 'pos' is empty"),
    ('{"query": "q", "neg": ["b"]}', r":2: 'pos' must be a list of strings"),
    ('{"query": "q", "pos": ["a"], "neg": "b"}', r":2: 'neg' must be a list of strings"),
    ('{"query": "q", "pos": ["a"], "neg": ["b"], "pos_scores": [1]}',
     r":2: teacher scores need both"),
    ('{"query": "q", "pos": ["a"], "neg": ["b"], "pos_scores": [1, 2], "neg_scores": [0]}',
     r":2: 'pos_scores' must be 1 finite numbers"),
    ('{"query": "q", "pos": ["a"], "neg": []}', r":2: 'neg' is empty, but a group of 4"),
    ('{"query": "q", "pos": ["a"], "neg": ["b"], "prompt": 3}', r":2: 'prompt' must be"),
])
def test_bad_training_data_names_the_line(tiny_path: Path, tmp_path: Path, line: str,
                                          message: str) -> None:
    good = json.dumps(_rows(1)[0])
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        finetune(_settings(tiny_path, path, tmp_path / "out"))


def test_bad_settings_are_refused_before_loading(tiny_path: Path, train_file: Path,
                                                 tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="heads must be a non-empty subset"):
        finetune(_settings(tiny_path, train_file, tmp_path / "o", heads=["dense", "bm25"]))
    with pytest.raises(ValueError, match="its loss is always 0"):
        finetune(_settings(tiny_path, train_file, tmp_path / "o", group_size=1, batch_size=1))
    with pytest.raises(ValueError, match="its loss is always 0"):
        finetune(_settings(tiny_path, train_file, tmp_path / "o", group_size=1,
                           in_batch_negatives=False))


def test_no_literal_none_prompt(tiny_path: Path, tmp_path: Path) -> None:
    from bgem3.train.data import read_training_data

    rows = _rows(2)
    rows[1]["prompt"] = "Represent this: "
    examples = read_training_data(write_jsonl(tmp_path / "t.jsonl", rows))
    assert examples[0].query == rows[0]["query"]
    assert examples[1].query == "Represent this: " + rows[1]["query"]
    assert not any("None" in e.query for e in examples)


def test_module_runs_under_python_m() -> None:
    done = subprocess.run([sys.executable, "-m", "bgem3", "finetune", "--help"],
                          capture_output=True, text=True, check=True)
    assert "--init-heads" in done.stdout and "--grad-cache" in done.stdout


def test_length_bucketed_batches_stay_within_the_token_budget(tiny_path: Path,
                                                            train_file: Path) -> None:
    from bgem3.train.data import GroupBatches, TrainingSet, read_training_data

    tokenizer = load_tokenizer(tiny_path)
    train_set = TrainingSet(read_training_data(train_file), tokenizer.backend, tokenizer.spec,
                            4, 64, 64, seed=3)
    sampler = GroupBatches(train_set, batch_size=8, batch_tokens=4 * 4 * 20, seed=3)
    first = sampler.batches()
    assert sorted(i for b in first for i in b) == list(range(len(train_set)))
    for batch in first:
        longest = max(int(train_set.lengths[i]) for i in batch)
        assert len(batch) == 1 or len(batch) * 4 * longest <= 4 * 4 * 20
        assert len(batch) <= 8
    assert sampler.batches() == first  # same seed and epoch, same batches
    groups = [train_set.group(i)[0].tolist() for i in range(5)]
    sampler.set_epoch(1)
    assert sampler.batches() != first
    assert [train_set.group(i)[0].tolist() for i in range(5)] != groups  # new draws per epoch
    sampler.set_epoch(0)
    assert [train_set.group(i)[0].tolist() for i in range(5)] == groups
    for i in range(len(train_set)):  # the positive leads each group
        rows, _ = train_set.group(i)
        assert train_set.examples[i].pos[0] == train_set.passages_text(rows[0])


def test_gradient_checkpointing_gives_the_same_gradients(tiny_path: Path,
                                                         train_file: Path) -> None:
    from bgem3.train.data import TrainingSet, collate_groups, read_training_data

    tokenizer = load_tokenizer(tiny_path)
    train_set = TrainingSet(read_training_data(train_file), tokenizer.backend, tokenizer.spec,
                            4, 64, 64)
    batch = collate_groups(train_set, list(range(4)), tokenizer.spec.pad_id)
    grads = []
    for checkpointing in (False, True):
        network = M3ForTraining(_network(tiny_path), tokenizer.spec, group_size=4)
        if checkpointing:
            network.gradient_checkpointing_enable()
        network(**batch).loss.backward()
        grads.append({k: p.grad for k, p in network.named_parameters() if p.grad is not None})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_missing_accelerate_says_how_to_install_it(tiny_path: Path, tmp_path: Path) -> None:
    code = ("import sys; sys.modules['accelerate'] = None\n"
            "from bgem3.train import FinetuneSettings, finetune\n"
            f"try:\n    finetune(FinetuneSettings(model={str(tiny_path)!r}, train_data=['x'], "
            f"output={str(tmp_path / 'out')!r}))\n"
            "except ImportError as e: print(e)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert 'pip install "bgem3[train]"' in done.stdout
    assert not (tmp_path / "out").exists()
    cli = ("import sys; sys.modules['accelerate'] = None\n"
           "from bgem3.cli import main\n"
           f"sys.exit(main(['finetune', '--model', {str(tiny_path)!r}, '--train-data', 'x', "
           f"'--output', {str(tmp_path / 'out')!r}]))")
    done = subprocess.run([sys.executable, "-c", cli], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("bgem3: error: fine-tuning runs on")


# ---------------------------------------------------------------- settings and data seams
def test_every_setting_carries_a_one_line_help_text() -> None:
    import dataclasses

    for field in dataclasses.fields(FinetuneSettings):
        text = field.metadata.get("help")
        assert isinstance(text, str) and text.strip() and "\n" not in text, field.name
        choices = field.metadata.get("choices")
        if choices is not None and field.default is not dataclasses.MISSING \
                and field.default is not None:
            assert field.default in choices, field.name


def test_training_reads_jsonl_through_the_shared_reader(tmp_path: Path) -> None:
    from bgem3 import _jsonl
    from bgem3.evaluation import data as evaluation_data
    from bgem3.train.data import read_training_rows

    assert evaluation_data.read_jsonl is _jsonl.read_jsonl  # still importable from there
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"query": "q", "pos": ["a"]}\n\n{"query": "r", "pos": ["b"]}\n')
    assert [(w.rsplit(":", 1)[1], r["query"]) for w, r in read_training_rows([path])] == [
        ("1", "q"), ("3", "r")]
    path.write_bytes(b'{"query": "q", "pos": ["a"]}\n[1]\n')
    with pytest.raises(DatasetError, match=r":2: expected a JSON object"):
        list(read_training_rows([path]))
    path.write_bytes(b'{"query": "\xff"}\n')
    with pytest.raises(DatasetError, match=r":1: not UTF-8"):
        list(read_training_rows([path]))


def test_the_settings_load_without_torch() -> None:
    code = ("import sys, bgem3.train, bgem3.cli; bgem3.cli.build_parser(); "
            "print('torch' in sys.modules); bgem3.train.m3_loss; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["False", "True"]  # the loss loads torch on first use


def test_the_network_keeps_the_tokenizer_spec_for_collation(tiny_path: Path) -> None:
    spec = load_tokenizer(tiny_path).spec
    network = M3ForTraining(_network(tiny_path), spec, group_size=2)
    assert network.spec == spec and network.spec.pad_id == 1


def test_moved_names_still_import_with_a_deprecation_warning() -> None:
    import bgem3.ray
    import bgem3.train
    import bgem3.train.trainer

    with pytest.warns(DeprecationWarning, match="import FinetuneSettings from bgem3.train"):
        from bgem3.train.trainer import FinetuneSettings
    assert FinetuneSettings is bgem3.train.FinetuneSettings
    with pytest.warns(DeprecationWarning, match="BGEM3Encoder is deprecated"):
        assert bgem3.ray.BGEM3Encoder is not None
    with pytest.raises(AttributeError):
        bgem3.train.trainer.no_such_name  # noqa: B018
