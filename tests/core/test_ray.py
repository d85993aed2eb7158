"""bgem3.ray on a local Ray cluster (started once for the module, shut down after)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bgem3 import BGEM3, CheckpointNotFoundError, HybridIndex
from bgem3.arrow import from_arrow, read_metadata
from bgem3.index import QdrantHybridIndex
from bgem3.testing import random_texts
from qdrant_client import QdrantClient

ray = pytest.importorskip("ray")
import bgem3.ray  # noqa: E402

pytestmark = pytest.mark.enable_socket  # Ray talks to itself over localhost

TEXTS = list(dict.fromkeys(random_texts(60, min_words=2, max_words=40, seed=51)))[:40]
IDS = [f"doc-{i}" for i in range(len(TEXTS))]


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    # Ray runs its workers at nice 15: on a busy 2-core machine they starve (1 min per actor)
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False, _node_ip_address="127.0.0.1")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def _dataset(cluster, texts=TEXTS, ids=IDS):  # type: ignore[no-untyped-def]
    return cluster.data.from_arrow(pa.table({"id": ids, "text": texts, "lang": ["en"] * len(ids)}))


def _encoded(tiny_path: Path, cluster, **kw):  # type: ignore[no-untyped-def]
    options = {"dense": True, "sparse": True, "colbert": True, "rows_per_call": 7,
               "device": "cpu", "threads": 1, "colbert_dtype": "float32",
               "keep_columns": ("text", "lang"), **kw}
    return bgem3.ray.encode_dataset(_dataset(cluster), tiny_path, **options)


@pytest.fixture(scope="module")
def written(tiny_path: Path, cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("ray") / "vectors"
    _encoded(tiny_path, cluster).write_parquet(str(out))  # one actor; ids checked first
    return out


def test_outputs_equal_encode_documents_joined_by_id(model: BGEM3, written: Path) -> None:
    table = pq.read_table(written)  # plain pyarrow, no Ray
    assert table.schema.field("dense").type == pa.list_(pa.float32(), model.dense_dim)
    assert table.schema.field("colbert").type == pa.list_(pa.list_(pa.float32(),
                                                                  model.colbert_dim))
    assert table.schema.field("sparse_indices").type == pa.list_(pa.int32())
    assert table.column_names == ["id", "text", "dense", "sparse_indices", "sparse_values",
                                  "colbert", "tokens", "truncated", "lang"]
    assert read_metadata(table.schema)["fingerprint"] == model.fingerprint
    ids, out = from_arrow(table)
    assert sorted(ids) == sorted(IDS)
    expected = model.encode_documents(TEXTS, dense=True, sparse=True, colbert=True)
    row = {i: n for n, i in enumerate(IDS)}
    for position, doc_id in enumerate(ids):
        j = row[doc_id]
        np.testing.assert_allclose(out.dense[position], expected.dense[j], atol=1e-6)
        assert out.sparse[position].indices.tolist() == expected.sparse[j].indices.tolist()
        np.testing.assert_allclose(out.sparse[position].values, expected.sparse[j].values,
                                   atol=1e-6)
        np.testing.assert_allclose(out.colbert[position], expected.colbert[j], atol=1e-6)
        assert out.tokens[position] == expected.tokens[j]


def test_equal_lengths_and_one_row_per_call_keep_the_schema(tiny_path: Path, cluster,  # type: ignore[no-untyped-def]
                                                            tmp_path: Path) -> None:
    same = [f"word{i} paris" for i in range(6)]  # every row the same length
    ds = _dataset(cluster, same, [str(i) for i in range(6)])
    vectors = bgem3.ray.encode_dataset(ds, tiny_path, colbert=True, rows_per_call=1,
                                       device="cpu", threads=1, check_ids=False)
    vectors.write_parquet(str(tmp_path / "same"))
    files = sorted((tmp_path / "same").glob("*.parquet"))
    schemas = [pq.read_schema(f) for f in files]  # (not a set: pyarrow < 16 cannot hash them)
    assert schemas and all(s.equals(schemas[0], check_metadata=True) for s in schemas)
    assert pq.read_table(tmp_path / "same").num_rows == 6


def test_two_actors_give_what_one_gives(tiny_path: Path, cluster, written: Path) -> None:  # type: ignore[no-untyped-def]
    def dense_by_id(table: pa.Table) -> dict[str, list[float]]:
        ids, out = from_arrow(table)
        return {i: out.dense[k].round(6).tolist() for k, i in enumerate(ids)}

    two = pa.concat_tables(cluster.get(_encoded(tiny_path, cluster, check_ids=False,
                                                num_actors=2, tasks_per_actor=1)
                                       .to_arrow_refs()))
    assert dense_by_id(two) == dense_by_id(pq.read_table(written))


def test_add_parquet_into_both_backends_searches_like_a_direct_add(  # type: ignore[no-untyped-def]
        model: BGEM3, written: Path) -> None:
    direct = HybridIndex(model)
    direct.add(TEXTS, ids=IDS, metadata=[{"lang": "en"}] * len(IDS))
    loaded = HybridIndex(model)
    assert loaded.add_parquet(written, metadata_columns=["lang"], batch_rows=9) == 40
    qdrant = QdrantHybridIndex(model, QdrantClient(":memory:"))
    assert qdrant.add_parquet(written, metadata_columns=["lang"]) == 40
    for query in random_texts(4, max_words=6, seed=52):
        expected = [(h.id, round(h.score, 3)) for h in direct.search(query, k=5,
                                                                     filter={"lang": "en"})]
        assert [(h.id, round(h.score, 3)) for h in loaded.search(query, k=5,
                                                                 filter={"lang": "en"})] == expected
        assert [h.id for h in qdrant.search(query, k=5)] == [i for i, _ in expected]
    assert loaded.get(["doc-3"])[0].text == TEXTS[3]


def test_a_bad_model_fails_in_the_driver(cluster, tmp_path: Path, tiny_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        bgem3.ray.encode_dataset(_dataset(cluster), str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="tasks_per_actor must be a positive int"):
        bgem3.ray.encode_dataset(_dataset(cluster), tiny_path, tasks_per_actor=0)
    with pytest.raises(ValueError, match="no column 'body'"):
        bgem3.ray.encode_dataset(_dataset(cluster), tiny_path, text_column="body")


def test_importing_bgem3_does_not_import_ray_and_missing_ray_says_how() -> None:
    code = ("import sys, bgem3, bgem3.arrow; print('ray' in sys.modules)\n"
            "sys.modules['ray'] = None\n"
            "try:\n    import bgem3.ray; bgem3.ray._ray()\nexcept ImportError as e: print(e)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.stdout.split("\n")[:2] == ["False", 'bgem3.ray needs Ray Data: pip install '
                                                    '"bgem3[ray]"']


def test_null_or_repeated_ids_are_refused(tiny_path: Path, cluster) -> None:  # type: ignore[no-untyped-def]
    texts = TEXTS[:5]
    either = "|".join(re.escape(TEXTS[i][:20]) for i in (0, 2))  # Ray keeps no row order
    for ids, message in (([None, "a", None, "b", "c"], r"2 row\(s\) have a null id in column "
                                                       rf"'id' \(one has the text '({either})"),
                         (["a", "b", "a", "c", "d"], r"repeated: 'a' \(2 rows\)")):
        with pytest.raises(ValueError, match=message):  # 5 rows would give 4 documents
            bgem3.ray.encode_dataset(_dataset(cluster, texts, ids), tiny_path, rows_per_call=1)
    # without the check over the whole dataset, an actor still refuses a null id (a repeat
    # within its rows too: to_arrow's check)
    unchecked = bgem3.ray.encode_dataset(_dataset(cluster, texts, [None, "a", "b", "c", "d"]),
                                         tiny_path, check_ids=False, device="cpu", threads=1)
    with pytest.raises(ray.exceptions.RayTaskError,  # (Ray wraps the actor's ValueError)
                       match=rf"a row has a null id \(column 'id'; its text begins "
                             rf"'{re.escape(TEXTS[0][:20])}"):
        unchecked.take_all()
