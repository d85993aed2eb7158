"""Evaluation: trec_eval's metrics, rows that equal what search returns, tuning, bad data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import bgem3
import numpy as np
import pytest
import pytrec_eval
from bgem3.cli import main
from bgem3.errors import DatasetError, DatasetNotFoundError, IndexFormatError
from bgem3.evaluation import MODES, evaluate, evaluate_run, load_beir
from bgem3.evaluation.runner import weight_grid
from bgem3.evaluation.runs import colbert_runs, dense_runs
from bgem3.testing import build_tiny_checkpoint, write_beir_dataset


# ---------------------------------------------------------------- metrics vs pytrec_eval
def _random_case(rng: np.random.Generator) -> tuple[dict, dict]:
    docs = [f"d{i}" for i in range(int(rng.integers(1, 40)))] + ["d1x", "D2", "é"]
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(int(rng.integers(1, 8))):
        pool = [*docs, "unjudged-outside", "outside-corpus"]
        judged = rng.choice(pool, size=int(rng.integers(1, min(12, len(pool)) + 1)),
                            replace=False)
        qrels[f"q{q}"] = {str(d): int(rng.integers(-1, 4)) for d in judged}  # graded, some <= 0
        if rng.random() < 0.85:  # some judged queries retrieve nothing
            got = rng.choice(docs, size=int(rng.integers(1, len(docs) + 1)), replace=False)
            run[f"q{q}"] = {str(d): float(rng.integers(0, 5)) / 4 for d in got}  # many ties
    return run, qrels


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_pytrec_eval_on_adversarial_runs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(60):
        run, qrels = _random_case(rng)
        for k in (1, 3, 10):
            ours = evaluate_run(run, qrels, k=k, recall_at=5)
            ref = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut_{k}", "recall_5"}).evaluate(run)
            # MRR@k is trec_eval's recip_rank of the run cut at k in trec_eval's own order
            cut = {q: dict(sorted(r.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:k])
                   for q, r in run.items()}
            rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
            assert set(ours) == set(qrels)
            for q in qrels:  # pytrec_eval leaves out queries without a run: they score 0
                expected = ref.get(q, {f"ndcg_cut_{k}": 0.0, "recall_5": 0.0})
                assert ours[q][f"ndcg@{k}"] == pytest.approx(expected[f"ndcg_cut_{k}"], abs=1e-12)
                assert ours[q]["recall@5"] == pytest.approx(expected["recall_5"], abs=1e-12)
                assert ours[q][f"mrr@{k}"] == pytest.approx(
                    rr.get(q, {"recip_rank": 0.0})["recip_rank"], abs=1e-12)


def test_ties_are_broken_by_document_id_descending() -> None:
    scores = evaluate_run({"q": {"a": 1.0, "b": 1.0, "c": 0.5}}, {"q": {"b": 1}}, k=1)
    assert scores["q"]["mrr@1"] == 1.0  # "b" > "a": b ranks first
    scores = evaluate_run({"q": {"a": 1.0, "b": 1.0}}, {"q": {"a": 1}}, k=1)
    assert scores["q"]["mrr@1"] == 0.0


# ---------------------------------------------------------------- the rows
@pytest.fixture(scope="module")
def beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_beir_dataset(tmp_path_factory.mktemp("beir"), n_documents=80, n_queries=30,
                              query_words=6, seed=3)


@pytest.fixture(scope="module")
def report_and_index(model, beir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    index_dir = tmp_path_factory.mktemp("eval") / "index"
    return evaluate(model, beir, index=index_dir, tune=True), index_dir


def test_verbatim_queries_give_dense_ndcg_one(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    report = evaluate(model, write_beir_dataset(tmp_path, n_documents=40, n_queries=15))
    dense = report.row("dense")
    assert dense.metrics == {"ndcg@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0}
    assert dense.per_query["ndcg@10"].shape == (15,)


def test_every_row_equals_metrics_of_what_search_returns(model, beir: Path,  # type: ignore[no-untyped-def]
                                                         report_and_index) -> None:
    report, index_dir = report_and_index
    data = load_beir(beir)
    index = bgem3.HybridIndex.load(index_dir, model)
    searches = {
        "dense": {"mode": "dense", "rerank": False},
        "sparse": {"mode": "sparse", "rerank": False},
        "sparse+dense": {"rerank": False},
        "colbert+sparse+dense": {},
        "rrf": {"fusion": "rrf"},
    }
    assert [r.mode for r in report.results] == list(MODES)
    for mode, options in searches.items():
        hits = index.search_batch(data.query_texts, k=100, **options)
        run = {q: {h.id: h.score for h in found} for q, found in
               zip(data.query_ids, hits, strict=True)}
        expected = evaluate_run(run, data.qrels)
        got = report.row(mode).per_query
        for i, q in enumerate(report.query_ids):
            for metric in ("ndcg@10", "recall@100", "mrr@10"):
                assert got[metric][i] == pytest.approx(expected[q][metric], abs=1e-12), (mode, q)


def test_colbert_row_ranks_the_whole_corpus_by_maxsim(model, beir: Path,  # type: ignore[no-untyped-def]
                                                      report_and_index) -> None:
    report, _ = report_and_index
    data = load_beir(beir)
    assert report.colbert_ranking == "corpus"
    docs = model.encode_documents(data.corpus_texts, colbert=True, dense=False).colbert
    queries = model.encode_queries(data.query_texts, colbert=True, dense=False).colbert
    run = {}
    for q, vectors in zip(data.query_ids, queries, strict=True):
        scores = bgem3.colbert_scores(vectors, docs)
        run[q] = dict(zip(data.corpus_ids, scores.astype(float), strict=True))
    expected = evaluate_run(run, data.qrels)
    got = report.row("colbert").per_query["ndcg@10"]
    np.testing.assert_allclose(got, [expected[q]["ndcg@10"] for q in report.query_ids],
                               atol=1e-6)


def test_exhaustive_runs_equal_brute_force_whatever_the_chunks(model, beir: Path) -> None:  # type: ignore[no-untyped-def]
    data = load_beir(beir)
    index = bgem3.HybridIndex(model)
    index.add(data.corpus_texts, ids=data.corpus_ids)
    index.delete([data.corpus_ids[3]])  # a deleted document is never ranked
    snap = index.snapshot()
    to_corpus = np.arange(len(snap.ids), dtype=np.int64)
    queries = model.encode_queries(data.query_texts[:6], dense=True, colbert=True)
    offsets = snap.colbert_offsets
    stored = [snap.colbert.take(np.arange(offsets[i], offsets[i + 1])).astype(np.float32)
              for i in range(len(snap.ids))]
    per_chunking = []
    for chunk_vectors in (1 << 18, 50, 1):
        runs = colbert_runs(snap, to_corpus, queries.colbert, 10, chunk_vectors=chunk_vectors)
        for query, (rows, scores) in zip(queries.colbert, runs, strict=True):
            expected = bgem3.colbert_scores(query, stored).astype(np.float64)
            expected[3] = -np.inf
            assert sorted(rows.tolist()) == sorted(np.argsort(-expected)[:10].tolist())
            np.testing.assert_allclose(scores[:, 0], expected[rows], rtol=1e-6)
        per_chunking.append(runs)
    for runs in per_chunking[1:]:
        for (rows, scores), (rows0, scores0) in zip(runs, per_chunking[0], strict=True):
            np.testing.assert_array_equal(rows, rows0)
            np.testing.assert_allclose(scores, scores0, rtol=1e-6)  # products of other shapes
    corpus = model.encode_documents(data.corpus_texts).dense
    for query, (rows, scores) in zip(queries.dense, dense_runs(corpus, queries.dense, 7),
                                     strict=True):
        expected = corpus @ query
        assert sorted(rows.tolist()) == sorted(np.argsort(-expected)[:7].tolist())
        np.testing.assert_allclose(scores[:, 0], expected[rows], rtol=1e-5)


def test_colbert_falls_back_to_the_candidate_pool(model, beir: Path) -> None:  # type: ignore[no-untyped-def]
    report = evaluate(model, beir, colbert_corpus_limit=1, candidates=5, recall_at=10)
    assert report.colbert_ranking == "candidates"
    assert "hybrid candidates" in report.table()


def test_weights_one_zero_zero_reproduce_the_dense_row(model, beir: Path) -> None:  # type: ignore[no-untyped-def]
    report = evaluate(model, beir, weights=(1, 0, 0))
    dense = report.row("dense").per_query
    for mode in ("sparse+dense", "colbert+sparse+dense"):
        for metric, values in report.row(mode).per_query.items():
            np.testing.assert_array_equal(values, dense[metric])


def test_tuning_reports_held_out_and_in_sample_separately(model, beir: Path,  # type: ignore[no-untyped-def]
                                                          report_and_index) -> None:
    report, _ = report_and_index
    tuned = report.tuned
    assert tuned is not None and tuned.method.startswith("5-fold")
    assert tuned.in_sample_score == pytest.approx(tuned.grid_scores.max())
    assert tuned.score <= tuned.in_sample_score  # held out can only lose on this data
    out = report.to_dict()["tuned"]
    assert out["ndcg@10"] == tuned.score and out["in_sample_ndcg@10"] == tuned.in_sample_score
    # the grid scores are what a real run with those weights measures
    again = evaluate(model, beir, weights=tuned.weights)
    assert again.row("colbert+sparse+dense").metrics["ndcg@10"] == pytest.approx(
        tuned.in_sample_score, abs=1e-12)
    assert len(weight_grid(0.1)) == 66 and len(tuned.grid_scores) == 66


def test_tune_split_chooses_on_one_split_and_reports_the_other(model, beir: Path,  # type: ignore[no-untyped-def]
                                                               tmp_path: Path) -> None:
    data = tmp_path / "d"
    shutil.copytree(beir, data)
    lines = (beir / "qrels" / "test.tsv").read_text().splitlines()
    (data / "qrels" / "dev.tsv").write_text("\n".join(lines[:1] + lines[1:15]) + "\n")
    (data / "qrels" / "test.tsv").write_text("\n".join(lines[:1] + lines[15:]) + "\n")
    report = evaluate(model, data, tune=True, tune_split="dev")
    assert report.tuned is not None and report.tuned.method == "chosen on split 'dev'"
    assert len(report.query_ids) == len(lines) - 15
    held = evaluate(model, data, weights=report.tuned.weights)
    assert report.tuned.score == pytest.approx(
        held.row("colbert+sparse+dense").metrics["ndcg@10"], abs=1e-12)


def test_saved_encoding_is_reused_and_refused_for_another_corpus(  # type: ignore[no-untyped-def]
        model, beir: Path, report_and_index, tmp_path: Path) -> None:
    first, index_dir = report_and_index
    again = evaluate(model, beir, index=index_dir)
    assert any("loaded from" in n for n in again.notes)
    assert again.row("rrf").metrics == first.row("rrf").metrics
    other = write_beir_dataset(tmp_path / "other", n_documents=10, n_queries=3, seed=9)
    with pytest.raises(IndexFormatError, match="other documents"):
        evaluate(model, other, index=index_dir)


def test_an_index_without_colbert_gives_the_other_rows_and_says_why(  # type: ignore[no-untyped-def]
        model, tiny_path: Path, beir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    data = load_beir(beir)
    index = bgem3.HybridIndex(model, store_colbert=False)
    index.add(data.corpus_texts, ids=data.corpus_ids)
    index.save(tmp_path / "no-colbert")
    report = evaluate(model, beir, index=tmp_path / "no-colbert", tune=True)
    assert [r.mode for r in report.results] == ["dense", "sparse", "sparse+dense", "rrf"]
    assert set(report.missing) == {"colbert", "colbert+sparse+dense"}
    assert "stores no ColBERT vectors" in report.missing["colbert"]
    assert report.colbert_ranking is None
    searches = {"dense": {"mode": "dense"}, "sparse": {"mode": "sparse"},
                "sparse+dense": {}, "rrf": {"fusion": "rrf"}}
    for mode, options in searches.items():  # each row measures what the index's search returns
        hits = index.search_batch(data.query_texts, k=100, **options)
        expected = evaluate_run({q: {h.id: h.score for h in found} for q, found in
                                 zip(data.query_ids, hits, strict=True)}, data.qrels)
        got = report.row(mode).per_query["ndcg@10"]
        np.testing.assert_allclose(got, [expected[q]["ndcg@10"] for q in report.query_ids],
                                   atol=1e-12, err_msg=mode)
    assert report.tuned is not None and report.tuned.weights[2] == 0.0
    assert len(report.tuned.grid_scores) == 11  # the (dense, sparse, 0) triples of step 0.1
    assert main(["eval", str(beir), "--model", str(tiny_path), "--device", "cpu",
                 "--index", str(tmp_path / "no-colbert")]) == 0
    captured = capsys.readouterr()
    assert "colbert+sparse+dense    not computed: the index at" in captured.out
    assert "rerank" not in captured.out + captured.err


def test_dense_only_checkpoint_gives_the_dense_row_and_says_why(tmp_path: Path,
                                                               beir: Path) -> None:
    path = build_tiny_checkpoint(tmp_path / "dense-only", heads=False)
    report = evaluate(str(path), beir)
    assert [r.mode for r in report.results] == ["dense"]
    assert set(report.missing) == set(MODES) - {"dense"}
    assert "no sparse and ColBERT heads" in report.missing["sparse"]
    with_heads = evaluate(bgem3.BGEM3(build_tiny_checkpoint(tmp_path / "full"), device="cpu"),
                          beir)
    assert report.row("dense").metrics == with_heads.row("dense").metrics  # same backbone


def test_cli_json_equals_the_python_report(model, tiny_path: Path, beir: Path,  # type: ignore[no-untyped-def]
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(beir), "--model", str(tiny_path), "--json", "--tune",
                 "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = evaluate(model, beir, tune=True).to_dict()
    for report in (printed, expected):
        report.pop("timings")
        report.pop("model")
    assert printed == expected
    assert printed["results"][0]["mode"] == "dense" and "ndcg@10" in printed["results"][0]


def test_cli_table(tiny_path: Path, beir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(beir), "--model", str(tiny_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "colbert+sparse+dense" in out and "time: " in out and "ndcg@10" in out


# ---------------------------------------------------------------- bad data
def _dataset(tmp_path: Path) -> Path:
    return write_beir_dataset(tmp_path / "data", n_documents=6, n_queries=3)


@pytest.mark.parametrize(("file", "content", "message"), [
    ("corpus.jsonl", '{"_id": "a", "text": "x"}\n{"_id": "b", "text": ',
     "corpus.jsonl:2: not JSON"),
    ("corpus.jsonl", '{"_id": "a", "text": "x"}\n["a"]\n',
     "corpus.jsonl:2: expected a JSON object"),
    ("corpus.jsonl", '{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n',
     "corpus.jsonl:2: duplicate _id 'a' \\(first on line 1\\)"),
    ("corpus.jsonl", '{"_id": "a"}\n', "corpus.jsonl:1: 'text' must be a string"),
    ("corpus.jsonl", '{"text": "a"}\n', "corpus.jsonl:1: '_id' must be a non-empty string"),
    ("corpus.jsonl", "\n\n", "corpus.jsonl: no records"),
    ("queries.jsonl", '{"_id": "q0", "text": 3}\n', "queries.jsonl:1: 'text' must be a string"),
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\n", "test.tsv: no judgments"),
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq0\tdoc1\n", "test.tsv:2: expected"),
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq0\tdoc1\thigh\n",
     "test.tsv:2: score must be an integer"),
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq0\tdoc1\t1\nq0\tdoc1\t2\n",
     "test.tsv:3: query 'q0' and document 'doc1' are judged twice"),
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nnope\tdoc1\t1\n",
     "none of its 1 queries is in queries.jsonl"),
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq0\tdoc1\t1\nq1\tdoc2\t1e30\n",
     "test.tsv:3: score 1e30 is out of range: grades are 64-bit integers"),
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq0\tdoc1\t-9223372036854775809\n",
     "test.tsv:2: score -9223372036854775809 is out of range"),
])
def test_malformed_data_names_the_file_and_line(tmp_path: Path, file: str, content: str,
                                                message: str) -> None:
    root = _dataset(tmp_path)
    (root / file).write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        load_beir(root)


def test_non_utf8_missing_files_and_splits(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    (root / "queries.jsonl").write_bytes(b'{"_id": "q0", "text": "ok"}\n'
                                         b'{"_id": "q1", "text": "\xff"}\n')
    with pytest.raises(DatasetError, match=r"queries.jsonl:2: not UTF-8"):
        load_beir(root)
    with pytest.raises(DatasetNotFoundError, match="no such split; available: test"):
        load_beir(_dataset(tmp_path / "x"), split="dev")
    (root / "corpus.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"corpus\.jsonl: no such file"):
        load_beir(root)
    with pytest.raises(DatasetNotFoundError, match="no such dataset directory"):
        load_beir(tmp_path / "missing")


def test_unknown_ids_in_qrels_are_counted_not_fatal(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    with (root / "qrels" / "test.tsv").open("a") as f:
        f.write("ghost\tdoc1\t1\nq0\tmissing-doc\t1\nq1\tdoc2\t0\n")
    data = load_beir(root)
    assert data.unknown_query_judgments == 1 and data.unknown_document_judgments == 1
    assert "ghost" not in data.qrels and data.qrels["q0"]["missing-doc"] == 1
    assert any("missing from the corpus" in n for n in data.notes)


def test_cli_reports_bad_data_in_one_line(tiny_path: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = _dataset(tmp_path)
    (root / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\nnot json\n')
    assert main(["eval", str(root), "--model", str(tiny_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bgem3: error: {root / 'corpus.jsonl'}:2: not JSON (Expecting value)"]


def test_a_grade_beyond_64_bits_is_one_line_naming_the_file_and_line(
        tiny_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _dataset(tmp_path)
    with (root / "qrels" / "test.tsv").open("a") as f:
        f.write("q0\tdoc1\t99999999999999999999\n")
    assert main(["eval", str(root), "--model", str(tiny_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"bgem3: error: {root / 'qrels' / 'test.tsv'}:")
    assert "99999999999999999999 is out of range" in err[0]
    assert load_beir(_dataset(tmp_path / "ok")).qrels  # 64-bit grades themselves are fine
    edge = {"q": {"a": 2**63 - 1, "b": 1}}
    assert evaluate_run({"q": {"a": 1.0}}, edge)["q"]["ndcg@10"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="the grade of query 'q' and document 'a' is out of range"):
        evaluate_run({"q": {"a": 1.0}}, {"q": {"a": 2**63}})


def test_bad_arguments(model, beir: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="k must be a positive int"):
        evaluate(model, beir, k=0)
    with pytest.raises(ValueError, match="finite and non-negative"):
        evaluate(model, beir, weights=(float("nan"), 0, 1))
    with pytest.raises(ValueError, match="sum to zero"):
        evaluate(model, beir, weights=(0, 0, 0))
