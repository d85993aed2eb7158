"""bgem3.arrow: the fixed schema, exact round trips, checked reads, add_parquet, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bgem3 import BGEM3, EncodeOutput, HybridIndex
from bgem3._types import trusted_sparse
from bgem3.arrow import from_arrow, read_metadata, schema, to_arrow
from bgem3.cli import main
from bgem3.testing import build_tiny_checkpoint, random_texts

TEXTS = list(dict.fromkeys(random_texts(30, min_words=1, max_words=30, seed=61)))[:20]
IDS = [f"t{i}" for i in range(len(TEXTS))]


@pytest.fixture(scope="module")
def output(model: BGEM3):  # type: ignore[no-untyped-def]
    return model.encode_documents(TEXTS, dense=True, sparse=True, colbert=True)


def test_round_trip_is_exact(model: BGEM3, output) -> None:  # type: ignore[no-untyped-def]
    table = to_arrow(output, IDS, texts=TEXTS, model=model)
    ids, back = from_arrow(table)
    assert ids == IDS and table.column("text").to_pylist() == TEXTS
    np.testing.assert_array_equal(back.dense, output.dense)
    assert back.sparse == output.sparse
    for a, b in zip(back.colbert, output.colbert, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.tokens, output.tokens)
    np.testing.assert_array_equal(back.truncated, output.truncated)
    meta = read_metadata(table.schema)
    assert (meta["model"], meta["fingerprint"], meta["dense_dim"], meta["colbert_dim"]) == (
        model.name, model.fingerprint, model.dense_dim, model.colbert_dim)
    again = to_arrow(back, ids, texts=TEXTS, model=model)
    assert again.equals(table)


def test_half_precision_storage_and_a_fixed_schema(model: BGEM3, output) -> None:  # type: ignore[no-untyped-def]
    table = to_arrow(output, IDS, model=model, dense_dtype="float16", colbert_dtype="float16")
    assert table.schema.field("dense").type == pa.list_(pa.float16(), model.dense_dim)
    _, back = from_arrow(table)
    np.testing.assert_array_equal(back.dense, output.dense.astype(np.float16).astype(np.float32))
    # the schema depends on the model and options only: an empty table has it too
    empty = model.encode_documents([], dense=True, sparse=True, colbert=True)
    assert to_arrow(empty, [], model=model, dense_dtype="float16",
                    colbert_dtype="float16").schema.equals(table.schema, check_metadata=True)
    assert schema(dense_dim=model.dense_dim, colbert_dim=model.colbert_dim,
                  dense_dtype="float16", colbert_dtype="float16", model=model.name,
                  fingerprint=model.fingerprint,
                  max_length=model.document_max_length).equals(table.schema,
                                                               check_metadata=True)


def _with(table: pa.Table, name: str, array: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), table.schema.field(name), array)


def test_reads_check_the_content(model: BGEM3, output) -> None:  # type: ignore[no-untyped-def]
    table = to_arrow(output, IDS, model=model)
    with pytest.raises(ValueError, match="not a bgem3 vectors table"):
        from_arrow(table.drop_columns(["tokens"]).replace_schema_metadata({}))
    with pytest.raises(ValueError, match="null"):
        from_arrow(_with(table, "id", pa.array([None] + IDS[1:], pa.string())))
    rows = table.column("sparse_indices").to_pylist()
    first = next(i for i, r in enumerate(rows) if len(r) > 1)
    rows[first] = rows[first][::-1]
    with pytest.raises(ValueError, match="increasing"):
        from_arrow(_with(table, "sparse_indices", pa.array(rows, pa.list_(pa.int32()))))
    dense = table.column("dense").to_pylist()
    dense[0][0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        from_arrow(_with(table, "dense", pa.array(dense, table.schema.field("dense").type)))
    with pytest.raises(ValueError, match="unique"):
        to_arrow(output, ["same"] * len(IDS))


def test_files_without_metadata_are_read_by_their_column_types(model: BGEM3, output,  # type: ignore[no-untyped-def]
                                                              tmp_path: Path) -> None:
    """Spark and other engines drop the schema metadata when they write Parquet."""
    table = to_arrow(output, IDS, texts=TEXTS, model=model, colbert_dtype="float16")
    bare = table.replace_schema_metadata({})
    meta = read_metadata(bare.schema)
    assert (meta["dense_dim"], meta["colbert_dim"], meta["colbert_dtype"], meta["model"]) == (
        model.dense_dim, model.colbert_dim, "float16", None)
    pq.write_table(bare, tmp_path / "spark.parquet")
    assert HybridIndex(model).add_parquet(tmp_path / "spark.parquet") == len(IDS)
    with pytest.raises(ValueError, match="not bgem3's column types"):
        from_arrow(pa.table({"id": ["a"], "vector": [[1.0]]}))


def test_add_parquet_checks_every_file_before_adding(model: BGEM3, output, tmp_path: Path  # type: ignore[no-untyped-def]
                                                    ) -> None:
    folder = tmp_path / "vectors"
    folder.mkdir()
    half = len(IDS) // 2
    for part, rows in (("a", slice(0, half)), ("b", slice(half, None))):
        sub = type(output)(dense=output.dense[rows], sparse=output.sparse[rows],
                           colbert=output.colbert[rows])
        pq.write_table(to_arrow(sub, IDS[rows], texts=TEXTS[rows], model=model),
                       folder / f"{part}.parquet")
    index = HybridIndex(model)
    assert index.add_parquet(folder, batch_rows=3) == len(IDS)
    direct = HybridIndex(model)
    direct.add(TEXTS, ids=IDS)
    for q in TEXTS[:3]:
        assert ([(h.id, round(h.score, 5)) for h in index.search(q, k=5)]
                == [(h.id, round(h.score, 5)) for h in direct.search(q, k=5)])
    other = BGEM3(build_tiny_checkpoint(tmp_path / "other", seed=7), device="cpu")
    pq.write_table(to_arrow(other.encode_documents(["x"], sparse=True, colbert=True), ["x"],
                            model=other), folder / "c.parquet")
    fresh = HybridIndex(model)
    with pytest.raises(ValueError, match=r"c\.parquet: these vectors were made by"):
        fresh.add_parquet(folder)
    assert len(fresh) == 0  # checked before anything was added
    dense_only = tmp_path / "dense.parquet"
    pq.write_table(to_arrow(model.encode_documents(["x"], sparse=True), ["x"], model=model),
                   dense_only)
    with pytest.raises(ValueError, match="stores ColBERT vectors"):
        HybridIndex(model).add_parquet(dense_only)
    assert HybridIndex(model, store_colbert=False).add_parquet(dense_only) == 1
    with pytest.raises(FileNotFoundError):
        HybridIndex(model).add_parquet(tmp_path / "missing")


def test_encode_command_writes_parquet(model: BGEM3, tiny_path: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(IDS, TEXTS,
                                                                                   strict=True)))
    out = tmp_path / "v.parquet"
    assert main(["encode", str(docs), "--colbert", "--out", str(out), "--model",
                 str(tiny_path)]) == 0
    assert "encoded 20 texts" in capsys.readouterr().out
    table = pq.read_table(out)
    assert table.schema.field("colbert").type == pa.list_(pa.list_(pa.float16(),
                                                                  model.colbert_dim))
    index = HybridIndex(model)
    index.add_parquet(out)
    assert index.get(["t2"])[0].text == TEXTS[2]
    assert main(["encode", "just a text", "--out", str(out), "--model", str(tiny_path)]) == 1
    assert "give input files" in capsys.readouterr().err


def test_reads_only_the_columns_an_index_uses(model: BGEM3, output, tmp_path: Path  # type: ignore[no-untyped-def]
                                              ) -> None:
    from bgem3.arrow import iter_parquet, parquet_batches

    file = tmp_path / "v.parquet"
    table = to_arrow(output, IDS, texts=TEXTS, model=model)
    pq.write_table(table.append_column("lang", pa.array(["en"] * len(IDS))), file)
    read = [batch.schema.names for _, batch, _ in iter_parquet(file, columns=["id", "nope"])]
    assert read == [["id"]]
    batches = list(parquet_batches(file, model, colbert=False, text_column=None))
    assert [b[3].colbert for b in batches] == [None] and batches[0][1] is None
    ids, texts, metadata, out = next(iter(parquet_batches(
        file, model, colbert=True, metadata_columns=["lang"])))
    assert ids == IDS and texts == TEXTS and metadata[0] == {"lang": "en"}
    assert out.colbert is not None and len(out.colbert) == len(IDS)
    index = HybridIndex(model, store_colbert=False)
    assert index.add_parquet(file) == len(IDS)
    assert index.search(TEXTS[0], k=1)[0].id == IDS[0]


def test_any_encoder_names_the_vectors(model: BGEM3, output) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    # what the Encoder protocol promises and no more: its default length is recorded
    remote = SimpleNamespace(name="remote", fingerprint=model.fingerprint,
                             dense_dim=model.dense_dim, colbert_dim=model.colbert_dim,
                             vocab_size=model.vocab_size, has_heads=True,
                             query_max_length=32, document_max_length=96)
    meta = read_metadata(to_arrow(output, IDS, model=remote).schema)  # type: ignore[arg-type]
    assert (meta["model"], meta["fingerprint"], meta["max_length"]) == (
        "remote", model.fingerprint, 96)
    meta = read_metadata(to_arrow(output, IDS, model=remote, max_length=64).schema)  # type: ignore[arg-type]
    assert meta["max_length"] == 64
    assert read_metadata(to_arrow(output, IDS, model=model).schema)["max_length"] == \
        model.document_max_length


def test_zero_rows_round_trip_to_empty_outputs(model: BGEM3) -> None:
    empty = model.encode_documents([], dense=True, sparse=True, colbert=True)
    ids, back = from_arrow(to_arrow(empty, [], model=model))
    assert ids == [] and back.sparse == [] and back.colbert == []
    assert back.dense is not None and back.dense.shape == (0, model.dense_dim)
    assert len(back) == 0


@pytest.mark.parametrize("column", ["dense", "sparse", "colbert"])
def test_non_finite_vectors_are_refused_naming_the_row(model: BGEM3, output, column: str  # type: ignore[no-untyped-def]
                                                       ) -> None:
    dense = output.dense.copy()
    sparse, colbert = list(output.sparse), list(output.colbert)
    if column == "dense":
        dense[3, 1] = np.nan
    elif column == "sparse":
        row = next(i for i in range(3, len(IDS)) if len(sparse[i]) > 1)
        # (SparseVector refuses them; the encoder builds its vectors unchecked, as here)
        sparse[row] = trusted_sparse(sparse[row].indices, sparse[row].values * np.inf)
    else:
        colbert[3] = colbert[3].copy()
        colbert[3][-1, 0] = -np.inf
    bad = EncodeOutput(dense=dense, sparse=sparse, colbert=colbert)
    row = 3 if column != "sparse" else next(i for i in range(3, len(IDS))
                                            if len(output.sparse[i]) > 1)
    with pytest.raises(ValueError, match=rf"row {row} \(id '{IDS[row]}'\): its {column} vector "
                                         "holds NaN or infinite values"):
        to_arrow(bad, IDS, model=model)


def test_float16_storage_refuses_values_it_cannot_hold(model: BGEM3, output) -> None:  # type: ignore[no-untyped-def]
    large = EncodeOutput(dense=output.dense * 1e6)  # finite in float32, infinite in float16
    assert to_arrow(large, IDS).num_rows == len(IDS)
    with pytest.raises(ValueError, match=r"row 0 .*stored as float16"):
        to_arrow(large, IDS, dense_dtype="float16")


def test_null_empty_and_repeated_ids_are_refused_naming_the_row(output) -> None:  # type: ignore[no-untyped-def]
    ids = list(IDS)
    for bad, message in ((None, "row 4: the id is null"), (float("nan"), "row 4: the id is null"),
                         ("", "row 4: the id is empty"),
                         (IDS[1], f"rows 1 and 4 have the same id '{IDS[1]}'")):
        ids[4] = bad
        with pytest.raises(ValueError, match=message):
            to_arrow(output, ids)
    assert from_arrow(to_arrow(output, np.arange(len(IDS))))[0] == [str(i) for i in
                                                                      range(len(IDS))]
