"""``SearchIndex``: what both index backends share, written once.

A backend stores documents and implements :meth:`SearchIndex._search_encoded` (encoded
queries and checked :class:`~bgem3.index.options.SearchOptions` in, hits out). This base
writes ``search``, ``search_batch`` and ``search_encoded`` over it, checks the options
against the backend (its fusions, whether it stores ColBERT vectors), and prepares the
arguments of ``add`` the same way for every backend.
"""

from __future__ import annotations

import os
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from bgem3._inputs import as_document_ids, as_metadata, as_texts, surrogate_at
from bgem3._types import EncodeOutput, Encoder, Hit
from bgem3.batching import clean_text
from bgem3.index.options import DEFAULT_SEARCH, SearchKeywords, SearchOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

__all__ = ["ParquetLoad", "SearchIndex", "check_encoder"]

Checked = tuple[list[str] | None, list[str], list[dict[str, Any]], EncodeOutput]
"""Checked arguments of ``add`` (texts, ids, metadata, and the documents' outputs)."""


class ParquetLoad(int):
    """What ``add_parquet`` returns: the number of documents it added (an ``int``).

    ``len(index)`` grew by exactly this number. Rows whose id the index held already
    replaced those documents (upserts): :attr:`replaced` counts them.

    Attributes:
        added: Documents new to the index (the ``int`` value).
        replaced: Documents that replaced one with the same id.
        rows: Rows read: ``added + replaced``.

    Example:
        >>> load = ParquetLoad(added=3, replaced=2)
        >>> load == 3, load.replaced, load.rows, f"{load} added"
        (True, 2, 5, '3 added')
    """

    added: int
    replaced: int

    def __new__(cls, added: int, replaced: int) -> ParquetLoad:
        """The count ``added``, carrying ``replaced``."""
        load = super().__new__(cls, added)
        load.added, load.replaced = added, replaced
        return load

    def __getnewargs__(self) -> tuple[int, int]:  # type: ignore[override]
        return self.added, self.replaced

    @property
    def rows(self) -> int:
        """The rows read, ``added + replaced``."""
        return self.added + self.replaced

    def __repr__(self) -> str:
        return f"ParquetLoad(added={self.added}, replaced={self.replaced})"

    def __str__(self) -> str:  # printed and formatted as the number it is
        return int.__repr__(self)


def check_encoder(model: Any, what: str) -> Encoder:
    """``model`` if it can feed an index: an :class:`~bgem3._types.Encoder` with heads.

    Raises:
        TypeError: A path (the index needs a loaded model) or an object that is no encoder.
        ValueError: A model loaded without its sparse and ColBERT heads.
    """
    import os

    if isinstance(model, (str, os.PathLike)):
        raise TypeError(f"{what} needs a loaded model (bgem3.BGEM3), got the path "
                        f"{os.fspath(model)!r}; to open a saved index use "
                        f"{what}.load(path, model)")
    if not isinstance(model, Encoder):
        raise TypeError(f"{what} needs a bgem3.BGEM3 model (or another bgem3 Encoder), got "
                        f"{type(model).__name__}")
    if not model.has_heads:
        raise ValueError(f"{what} needs a model with its sparse and ColBERT heads; "
                         f"{model.name!r} was loaded with dense_only=True")
    return model


class SearchIndex(ABC):
    """The search API of a hybrid index; backends implement storage and ``_search_encoded``.

    Attributes:
        model: The encoder of added texts and queries.
        store_colbert: Whether ColBERT vectors are stored (and searches rerank by default).
        fusions: The fusions this backend supports.
    """

    fusions: ClassVar[tuple[str, ...]] = ("weighted", "rrf")
    model: Encoder
    store_colbert: bool

    # ------------------------------------------------------------------ searching
    def search(
        self,
        query: str,
        k: int = DEFAULT_SEARCH.k,
        **options: Unpack[SearchKeywords],
    ) -> list[Hit]:
        """Search with one query; see :meth:`search_batch` for the arguments."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        return self.search_batch([query], k, **options)[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = DEFAULT_SEARCH.k,
        **options: Unpack[SearchKeywords],
    ) -> list[list[Hit]]:
        """Search with many queries, encoded in one batch.

        Args:
            queries: Query texts.
            k: Hits per query (fewer if fewer documents match).
            **options: The other search options, each documented (with its default) in
                :class:`~bgem3.index.options.SearchOptions`: ``mode`` (``"hybrid"``,
                ``"dense"``, ``"sparse"``), ``fusion`` (``"weighted"``, ``"rrf"``; Qdrant also
                ``"dbsf"``), ``weights`` (dense, sparse, colbert), ``candidates`` (from each
                of the dense and sparse lists), ``rerank`` (ColBERT; ``None``: when stored),
                ``filter`` (metadata conditions applied before top-k) and ``rrf_k``.

        Returns:
            One list of :class:`~bgem3.Hit` per query, best first.

        Raises:
            ValueError: ``k`` or ``candidates`` below 1, an unknown mode or fusion, or
                reranking requested from an index without ColBERT vectors.
            TypeError: An option that does not exist.
        """
        if isinstance(queries, str):
            raise TypeError("queries must be a list of strings; use search() for one query")
        texts = as_texts(queries, "queries")
        checked = self.search_options(k=k, **options)
        encoded = self.model.encode_queries(texts, dense=True, sparse=True,
                                            colbert=bool(checked.rerank))
        return self._search_encoded(encoded, checked)

    def search_encoded(
        self,
        queries: EncodeOutput,
        k: int = DEFAULT_SEARCH.k,
        **options: Unpack[SearchKeywords],
    ) -> list[list[Hit]]:
        """Search with queries encoded already (``encode_queries`` output).

        Takes the arguments of :meth:`search_batch`; use it to embed once and search often.
        """
        return self._search_encoded(queries, self.search_options(k=k, **options))

    def search_options(self, options: SearchOptions | None = None, **changes: Any
                       ) -> SearchOptions:
        """Checked options for this index, with ``rerank`` resolved to ``True`` / ``False``.

        Args:
            options: Options to start from (``DEFAULT_SEARCH`` when ``None``).
            **changes: Options to change (the keywords of :meth:`search_batch`).

        Raises:
            ValueError: An invalid option, a fusion this backend lacks, or ``rerank=True``
                without stored ColBERT vectors.
        """
        checked = (options or DEFAULT_SEARCH).replace(**changes) if changes else \
            (options or DEFAULT_SEARCH)
        if checked.fusion not in self.fusions:
            raise ValueError(f"fusion must be one of {', '.join(map(repr, self.fusions))}, got "
                             f"{checked.fusion!r}")
        if checked.rerank and not self.store_colbert:
            raise ValueError("rerank=True needs an index that stores ColBERT vectors "
                             "(store_colbert=True)")
        return checked.replace(rerank=self.store_colbert if checked.rerank is None
                               else checked.rerank)

    @abstractmethod
    def _search_encoded(self, queries: EncodeOutput, options: SearchOptions
                        ) -> list[list[Hit]]:
        """One list of hits per encoded query; ``options`` are checked, ``rerank`` a bool."""

    # ------------------------------------------------------------------ adding
    def add(
        self,
        texts: Sequence[str] | None,
        ids: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        *,
        embeddings: EncodeOutput | None = None,
        batch_size: int = 256,
        show_progress: bool | None = None,
    ) -> list[str]:
        """Add documents, replacing those whose ids exist already (upsert).

        Texts are encoded in batches (one forward pass for all three outputs) unless
        ``embeddings`` are given (then ``texts`` may be ``None``). The index changes only
        if the whole call succeeds.

        Args:
            texts: Document texts.
            ids: One unique id per document; ``None`` generates random ids.
            metadata: One dict per document (used by search filters).
            embeddings: Precomputed outputs of ``encode_documents`` for these documents,
                with ``dense``, ``sparse`` and (if the index stores them) ``colbert``.
            batch_size: Encoding batch size.
            show_progress: Progress bar while encoding (``None``: for large inputs).

        Returns:
            The ids, in order.

        Everything stored can be saved: texts with unpaired surrogates (not valid
        Unicode) are stored as they are encoded, with U+FFFD in their place (a
        ``UnicodeWarning`` says so); ids and metadata must be valid Unicode, and metadata
        values what JSON holds: strings, numbers, bools, ``None``, and lists and dicts
        (with string keys) of them. Metadata is stored as a copy in that form (tuples
        as lists, numpy scalars as Python numbers).

        Raises:
            TypeError: Texts, ids or metadata of the wrong type, a metadata key that is
                not a string, or a metadata value JSON cannot hold (a ``datetime``...).
            ValueError: Mismatched lengths, duplicate ids, an id or metadata string with
                an unpaired surrogate, or embeddings of the wrong shape or with NaN values.
        """
        items, doc_ids, metas, encoded = self._add_arguments(
            texts, ids, metadata, embeddings, batch_size, show_progress)
        self._store(items, doc_ids, metas, encoded, batch_size)
        return doc_ids

    @abstractmethod
    def _store(self, texts: list[str] | None, doc_ids: list[str],
               metas: list[dict[str, Any]], embeddings: EncodeOutput, batch_size: int) -> None:
        """Store checked documents (all or nothing); ``embeddings`` are not yet validated."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id; unknown ids raise ``KeyError`` and nothing is deleted."""

    @abstractmethod
    def get(self, ids: Sequence[str]) -> list[Hit]:
        """The stored documents with these ids; unknown ids raise ``KeyError``."""

    @abstractmethod
    def __len__(self) -> int:
        """The number of documents."""

    def _add_arguments(
        self,
        texts: Sequence[str] | None,
        ids: Sequence[str] | None,
        metadata: Sequence[Mapping[str, Any]] | None,
        embeddings: EncodeOutput | None,
        batch_size: int,
        show_progress: bool | None,
    ) -> tuple[list[str] | None, list[str], list[dict[str, Any]], EncodeOutput]:
        """The checked arguments of ``add``, with the texts encoded unless given embeddings.

        Raises:
            TypeError: Texts, ids or metadata of the wrong type; neither texts nor embeddings.
            ValueError: Mismatched lengths, duplicate ids, or ids or metadata that are not
                valid Unicode.
        """
        items = None if texts is None else _storable_texts(as_texts(texts))
        if items is None and embeddings is None:
            raise TypeError("texts are required unless embeddings are given")
        if items is not None and embeddings is not None and len(embeddings) != len(items):
            raise ValueError(f"got {len(items)} texts but embeddings for {len(embeddings)}")
        n = len(items) if items is not None else len(embeddings)  # type: ignore[arg-type]
        doc_ids = [uuid.uuid4().hex for _ in range(n)] if ids is None else as_document_ids(ids)
        if len(doc_ids) != n:
            raise ValueError(f"got {n} documents but {len(doc_ids)} ids")
        if len(set(doc_ids)) != n:
            seen: set[str] = set()
            repeated = sorted({i for i in doc_ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
            raise ValueError(f"duplicate ids in one add: {repeated[:10]}")
        metas = as_metadata(metadata, n, doc_ids)
        if embeddings is None:
            embeddings = self.model.encode_documents(
                items or [], dense=True, sparse=True, colbert=self.store_colbert,
                batch_size=batch_size, show_progress=show_progress)
        return items, doc_ids, metas, embeddings

    def _parquet_documents(self, path: str | os.PathLike[str], text_column: str | None,
                           metadata_columns: Sequence[str], batch_rows: int
                           ) -> Iterator[Checked]:
        """The checked arguments of ``add`` for each batch of Parquet vectors.

        Checks what :meth:`add` checks, batch by batch, and that no id occurs twice in
        all the files together (``add`` refuses a repeated id within one call, and a load
        is one call).

        Raises:
            ValueError, TypeError: As :meth:`add`, and ``bgem3.arrow.parquet_batches``;
                the message names ``path`` (or the file).
        """
        from bgem3.arrow import parquet_batches

        seen: set[str] = set()
        for ids, texts, metadata, output in parquet_batches(
                path, self.model, colbert=self.store_colbert, text_column=text_column,
                metadata_columns=metadata_columns, batch_rows=batch_rows):
            try:
                checked = self._add_arguments(texts, ids, metadata, output, batch_rows, False)
            except (TypeError, ValueError) as exc:
                kind = TypeError if isinstance(exc, TypeError) else ValueError
                raise kind(f"{os.fspath(path)}: {exc}") from exc
            repeated = [i for i in checked[1] if i in seen]
            if repeated:
                raise ValueError(f"{os.fspath(path)}: ids {repeated[:10]} occur more than once "
                                 "in these files; nothing was added (ids must be unique in "
                                 "one load, as in one add)")
            seen.update(checked[1])
            yield checked


def _storable_texts(texts: list[str]) -> list[str]:
    """``texts``, with each one that is not valid Unicode cleaned as the tokenizer cleans it.

    The stored text is then the text that was encoded, and every text can be saved.
    """
    bad = [i for i, text in enumerate(texts) if surrogate_at(text) is not None]
    if not bad:
        return texts
    warnings.warn(f"{len(bad)} text(s) held unpaired surrogates (first: item {bad[0]}); "
                  "they were replaced with U+FFFD, in the stored text as in the encoded one",
                  UnicodeWarning, stacklevel=4)
    cleaned = list(texts)
    for i in bad:
        cleaned[i] = clean_text(texts[i])
    return cleaned
