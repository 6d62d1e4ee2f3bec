"""The package's layout rules: module sizes, and which layer may import which.

Read from the source with ``ast`` (lazy imports inside functions and ``TYPE_CHECKING``
imports count too), so a new module is checked without being listed here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segfew"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 450


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports: ``from segfew import itk`` counts as ``segfew.itk``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _reaches(imports: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(i for i in imports
                  if any(i == p or i.startswith(p + ".") or i.startswith(p + "_")
                         for p in packages))


def test_the_modules_are_found() -> None:
    names = {_name(p) for p in MODULES}
    assert {"segfew.predict", "segfew.models.mnet", "segfew.jobs.pretrain", "segfew.cli"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _name(p))
def test_no_module_is_over_450_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{_name(path)} has {lines} lines; split it along a concept"


def test_predict_imports_nothing_from_train() -> None:
    assert _reaches(_imports(PACKAGE / "predict.py"), ("segfew.train",)) == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "models").glob("*.py")),
                         ids=lambda p: _name(p))
def test_models_import_no_io_data_preprocess_or_modelfile(path: Path) -> None:
    below = ("segfew.io", "segfew.data", "segfew.preprocess", "segfew.modelfile",
             "segfew.cases", "segfew.spec")
    assert _reaches(_imports(path), below) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _name(p))
def test_only_the_cli_imports_rich_or_prints(path: Path) -> None:
    if _name(path).startswith("segfew.cli"):
        return
    assert _reaches(_imports(path), ("rich",)) == []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    prints = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
              and isinstance(node.func, ast.Name) and node.func.id == "print"]
    assert prints == [], f"{_name(path)} prints (lines {prints}); report through a callback"


@pytest.mark.parametrize("path", [*sorted((PACKAGE / "train").glob("*.py")),
                                  *sorted((PACKAGE / "models").glob("*.py")),
                                  PACKAGE / "preprocess.py", PACKAGE / "preprocess_cache.py"],
                         ids=lambda p: _name(p))
def test_below_the_jobs_no_run_spec_arrives(path: Path) -> None:
    """The jobs turn a spec into objects; training, networks and pre-processing take plain
    typed arguments (issue 7, item 3)."""
    assert _reaches(_imports(path), ("segfew.spec", "segfew.jobs", "pydantic")) == []


def test_the_developing_page_says_where_every_module_and_package_lives() -> None:
    page = (PACKAGE.parent / "docs" / "developing.md").read_text(encoding="utf-8")
    developing = page.split("## Where each concept lives", 1)[1].split("\n## ", 1)[0]
    modules = [f"{p.stem}.py" for p in PACKAGE.glob("*.py")
               if p.stem not in ("__init__", "__main__")]
    packages = [f"segfew/{p.name}/" for p in PACKAGE.iterdir()
                if p.is_dir() and (p / "__init__.py").is_file()]
    missing = [name for name in modules + packages if f"{name}`" not in developing]
    assert missing == [], f"docs/developing.md does not say where these live: {missing}"
