"""Smoke test of the installed distributions (run by tools/dist_check.py in a clean venv).

Encodes with the tiny checkpoint and runs one search through the core index, the LangChain
retriever and the LlamaIndex retriever, from the installed wheels (never the source tree).
"""

from __future__ import annotations

import sys
import tempfile
from importlib.metadata import files, version
from pathlib import Path


def check(ok: bool, what: str) -> None:
    """Exit with ``what`` unless ``ok``."""
    if not ok:
        sys.exit(f"smoke test failed: {what}")


def main() -> None:
    """Check the installed distributions end to end."""
    for name in ("bgem3", "langchain-bgem3", "llama-index-bgem3"):
        shipped = [str(f) for f in files(name) or []]
        check(any(f.endswith(".dist-info/licenses/LICENSE") for f in shipped),
              f"{name} {version(name)} has no LICENSE in its installed files")

    import bgem3
    from bgem3.testing import build_tiny_checkpoint

    check("site-packages" in Path(bgem3.__file__ or "").parts,  # run with `python -I`
          f"bgem3 was imported from {bgem3.__file__}, not from the installed wheel")

    texts = ["The Eiffel Tower is in Paris.", "BM25 ranks documents by term overlap.",
             "Dense retrieval embeds text as vectors.", "La tour Eiffel est à Paris."]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(build_tiny_checkpoint(Path(tmp) / "tiny"))
        model = bgem3.BGEM3(path)
        out = model.encode_documents(texts, dense=True, sparse=True, colbert=True)
        check(out.dense is not None and out.dense.shape == (4, model.dense_dim), "dense shape")

        index = bgem3.HybridIndex(model)
        index.add(texts, ids=["a", "b", "c", "d"])
        hits = index.search(texts[1], k=2)
        check(hits[0].id == "b", f"HybridIndex.search: {hits}")

        from langchain_bgem3 import BGEM3HybridRetriever as LangChainRetriever

        docs = LangChainRetriever.from_texts(texts, model=model, k=2).invoke(texts[2])
        check(docs[0].page_content == texts[2], f"LangChain retriever: {docs}")

        from llama_index.core.schema import TextNode
        from llama_index.retrievers.bgem3 import BGEM3HybridRetriever as LlamaIndexRetriever

        nodes = [TextNode(text=t, id_=str(i)) for i, t in enumerate(texts)]
        found = LlamaIndexRetriever.from_nodes(nodes, model=model,
                                               similarity_top_k=2).retrieve(texts[3])
        check(found[0].node.node_id == "3", f"LlamaIndex retriever: {found}")
    print(f"smoke test passed: bgem3 {bgem3.__version__}, langchain-bgem3 "
          f"{version('langchain-bgem3')}, llama-index-bgem3 {version('llama-index-bgem3')}")


if __name__ == "__main__":
    main()
