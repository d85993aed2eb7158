"""Build, check, install and smoke-test the three distributions (``make dist-check``).

1. ``python -m build`` makes an sdist of each package, then a wheel from that sdist.
2. ``twine check --strict`` on every file (the README that PyPI shows must render); each
   package README links absolutely (PyPI resolves no relative link); each wheel and sdist must
   ship ``LICENSE``.
3. A new venv gets torch, then the wheels (not editable) with their dependencies from PyPI,
   held to the versions of ``requirements-dev.lock``; ``pip check``.
4. ``tools/smoke_test.py`` runs there in isolated mode, from outside the source tree.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bgem3", "langchain-bgem3", "llama-index-bgem3")


def run(*args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None) -> None:
    """Run a command, echoing it; stop on failure."""
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], cwd=cwd, env=env, check=True)


def check_license(path: Path) -> None:
    """Exit unless the wheel or sdist at ``path`` contains the root ``LICENSE`` verbatim."""
    expected = (ROOT / "LICENSE").read_bytes()
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
            found = [archive.read(n) for n in names]
    else:
        with tarfile.open(path) as archive:
            members = [m for m in archive.getmembers() if m.name.count("/") == 1
                       and m.name.endswith("/LICENSE")]
            found = [archive.extractfile(m).read() for m in members]  # type: ignore[union-attr]
    if found != [expected]:
        sys.exit(f"{path.name}: expected the root LICENSE once, found {len(found)} LICENSE file(s)"
                 + (" that differ from it" if found else ""))


def check_readme_links(package: Path) -> None:
    """Exit unless every Markdown link of ``package``'s README is an absolute URL."""
    readme = package / "README.md"
    targets = re.findall(r"\]\(([^)\s]+)\)", readme.read_text(encoding="utf-8"))
    relative = [t for t in targets if not t.startswith(("https://", "http://"))]
    if relative:
        sys.exit(f"{readme.relative_to(ROOT)}: PyPI shows this README without the repository; "
                 f"expected absolute links, found relative ones: {relative}")


def lock_constraints(lock: Path, out: Path) -> None:
    """Write ``lock`` without its hashes (pip turns hashes in a constraints file into a demand)."""
    lines = []
    for line in lock.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith(("--hash", "#")) or not stripped:
            continue
        lines.append(stripped.removesuffix("\\").strip())
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    """Build, check, install and smoke-test; exit non-zero on the first failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", default="torch", help="what to pip install for torch")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--venv", type=Path, default=ROOT / ".cache" / "venv-dist")
    args = parser.parse_args()

    shutil.rmtree(args.dist, ignore_errors=True)
    for name in PACKAGES:
        check_readme_links(ROOT / "packages" / name)
    for name in PACKAGES:
        run(sys.executable, "-m", "build", "--quiet", "--no-isolation", "--outdir", args.dist,
            ROOT / "packages" / name)
    built = sorted(args.dist.iterdir())
    run(sys.executable, "-m", "twine", "check", "--strict", *built)
    for path in built:
        check_license(path)
    wheels = [p for p in built if p.suffix == ".whl"]
    if len(wheels) != len(PACKAGES):
        sys.exit(f"expected {len(PACKAGES)} wheels, built {[p.name for p in wheels]}")

    shutil.rmtree(args.venv, ignore_errors=True)
    run(sys.executable, "-m", "venv", args.venv)
    python = args.venv / "bin" / "python"
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        lock_constraints(ROOT / "requirements-dev.lock", constraints)
        run(python, "-m", "pip", "install", "-q", "-c", constraints, args.torch)
        run(python, "-m", "pip", "install", "-q", "-c", constraints, *wheels)
        run(python, "-m", "pip", "check")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        run(python, "-I", ROOT / "tools" / "smoke_test.py", cwd=Path(tmp), env=env)


if __name__ == "__main__":
    main()
