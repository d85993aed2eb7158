"""The tutorial notebooks are committed clean and read the model from BGEM3_MODEL."""

from __future__ import annotations

import json
from pathlib import Path

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_numbered_notebooks_without_outputs() -> None:
    assert [p.name[:3] for p in NOTEBOOKS] == [f"{i:02d}_" for i in range(1, len(NOTEBOOKS) + 1)]
    assert len(NOTEBOOKS) >= 5
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), path
        source = "".join("".join(c["source"]) for c in code)
        assert 'os.environ.get("BGEM3_MODEL", "BAAI/bge-m3")' in source, path
        for cell in code:  # install cells are skipped when the notebooks run as tests
            if "%pip" in "".join(cell["source"]):
                assert "skip-execution" in cell["metadata"].get("tags", []), path
