"""The package's layout rules: one order of layers, no import circle, module sizes, no
printing outside the CLI, no measured figures in docstrings, imports at the top of modules
(but for a short list of modules that keep ``import segfew`` and ``segfew --help`` light).

Read from the source with ``ast`` (lazy imports inside functions and ``TYPE_CHECKING``
imports count too), so a new module is checked without being listed here.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segfew"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 450

#: the layers, lowest first: a module imports only from its own layer or those before it.
#: Data flows one way: files → io → data → preprocess → models → train → inference →
#: evaluation → experiment; the jobs turn a spec into objects, the cli turns flags into a spec.
LAYERS: tuple[tuple[str, ...], ...] = (
    # the root package imports only the errors and names the rest lazily (``__getattr__``)
    ("segfew", "segfew.errors", "segfew.choices", "segfew.frameworks", "segfew.typing"),
    ("segfew.files",),
    ("segfew.runtime",),
    ("segfew.metrics",),  # pure numpy: training's validation and evaluation share one Dice
    ("segfew.io",),
    ("segfew.identity",),  # a scan's digest: a DICOM series' files, a header's data file (io)
    ("segfew.runinfo",),
    ("segfew.data",),
    ("segfew.preprocess",),
    ("segfew.labelling",),
    ("segfew.models",),
    ("segfew.train",),
    ("segfew.spec",),
    ("segfew.modelfile", "segfew.synth"),
    ("segfew.inference",),
    ("segfew.evaluation",),
    ("segfew.experiment",),
    ("segfew.jobs",),
    ("segfew.cli", "segfew.__main__"),
)


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


NAMES = {_name(p) for p in MODULES}


@cache
def _imports(path: Path) -> frozenset[str]:
    """The segfew modules ``path`` imports: ``from segfew.io import itk`` counts as
    ``segfew.io.itk``, ``from segfew.io import Image`` as ``segfew.io``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in NAMES else node.module)
    return frozenset(found)


def _segfew_imports(path: Path) -> set[str]:
    return {i for i in _imports(path) if i == "segfew" or i.startswith("segfew.")}


def _reaches(imports: frozenset[str] | set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(i for i in imports
                  if any(i == p or i.startswith(p + ".") for p in packages))


def _layer(name: str) -> int:
    """Index in :data:`LAYERS` of the longest entry that ``name`` is or lies under."""
    best, length = -1, -1
    for i, layer in enumerate(LAYERS):
        for entry in layer:
            under = name.startswith(entry + ".") and entry != "segfew"
            if (name == entry or under) and len(entry) > length:
                best, length = i, len(entry)
    return best


def test_the_modules_are_found() -> None:
    assert {"segfew.inference.predictor", "segfew.models.mnet", "segfew.jobs.pretrain",
            "segfew.cli"} <= NAMES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _name(p))
def test_every_module_has_a_layer(path: Path) -> None:
    assert _layer(_name(path)) >= 0, f"add {_name(path)} to LAYERS in tests/test_layout.py"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _name(p))
def test_each_layer_imports_only_layers_below_it(path: Path) -> None:
    here = _layer(_name(path))
    above = [i for i in _segfew_imports(path) if _layer(i) > here]
    assert above == [], (f"{_name(path)} (layer {LAYERS[here][0]}) imports {sorted(above)} "
                         "from a higher layer")


def test_no_import_circle() -> None:
    graph = {_name(p): {i for i in _segfew_imports(p) if i in NAMES} for p in MODULES}
    # a package's __init__ re-exports its modules; a module importing its own package's
    # __init__ would close a circle, so it imports its siblings by their module path
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append([*stack[stack.index(nxt):], node, nxt])
            elif nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert circles == [], "import circles: " + "; ".join(" → ".join(c) for c in circles)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _name(p))
def test_no_module_is_over_450_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{_name(path)} has {lines} lines; split it along a concept"


@pytest.mark.parametrize("path", sorted((PACKAGE / "inference").glob("*.py")),
                         ids=lambda p: _name(p))
def test_inference_imports_nothing_from_train(path: Path) -> None:
    assert _reaches(_imports(path), ("segfew.train",)) == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "models").glob("*.py")),
                         ids=lambda p: _name(p))
def test_models_import_no_io_data_preprocess_or_modelfile(path: Path) -> None:
    below = ("segfew.io", "segfew.data", "segfew.preprocess", "segfew.modelfile",
             "segfew.spec")
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
                                  *sorted((PACKAGE / "preprocess").glob("*.py"))],
                         ids=lambda p: _name(p))
def test_below_the_jobs_no_run_spec_arrives(path: Path) -> None:
    """The jobs turn a spec into objects; training, networks and pre-processing take plain
    typed arguments."""
    assert _reaches(_imports(path), ("segfew.spec", "segfew.jobs", "pydantic")) == []


#: a measured figure: a score, a speed-up, a time or a size quoted as a result
FIGURE = re.compile(
    r"\b(?:Dice|accuracy|AUROC|kappa)\s+(?:of\s+)?(?:0?\.\d|1\.0)"
    r"|\d(?:\.\d+)?\s*[×x]\s+(?:faster|slower|the speed|as fast)"
    r"|\b(?:measured|took|takes)\s+(?:about\s+)?\d+(?:\.\d+)?\s*(?:ms|s|min|%|MB|GB|GiB|MiB)\b",
    re.IGNORECASE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _name(p))
def test_no_measured_figures_in_docstrings(path: Path) -> None:
    """Figures rot in docstrings; they live in the docs beside the command that reproduces
    them."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = [tree, *(n for n in ast.walk(tree)
                     if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef))]
    found = [m.group(0) for n in nodes for m in FIGURE.finditer(ast.get_docstring(n) or "")]
    assert found == [], f"{_name(path)}: measured figures in docstrings: {found}"


def test_the_figure_pattern_catches_figures() -> None:
    assert FIGURE.search("the 2D M-Net reaches Dice 0.72 on ACDC")
    assert FIGURE.search("1.9× faster than scikit-image")
    assert FIGURE.search("an epoch took 12.5 s on two cores")
    assert not FIGURE.search("Dice per label, then the mean over cases")


def test_the_developing_page_says_where_every_module_and_package_lives() -> None:
    page = (PACKAGE.parent / "docs" / "developing.md").read_text(encoding="utf-8")
    developing = page.split("## Where each concept lives", 1)[1].split("\n## ", 1)[0]
    modules = [f"{p.stem}.py" for p in PACKAGE.glob("*.py")
               if p.stem not in ("__init__", "__main__")]
    packages = [f"segfew/{p.name}/" for p in PACKAGE.iterdir()
                if p.is_dir() and (p / "__init__.py").is_file()]
    missing = [name for name in modules + packages if f"{name}`" not in developing]
    assert missing == [], f"docs/developing.md does not say where these live: {missing}"


#: the modules that may import inside a function, and why: everything else imports at its top.
#: A key names a module or a package (all its modules).
LAZY_IMPORTS = {
    "segfew.cli": "each command imports the library when it runs: `segfew --help` loads no "
                  "torch",
    "segfew.io": "`segfew --help` reaches it through segfew.data: SimpleITK, nibabel and "
                 "pydicom load when a file of theirs is read",
    "segfew.data.read": "`segfew --help` reaches it through segfew.data: Pillow and pydicom "
                        "load when a label map's header is checked for lossy storage",
    "segfew.data.splits": "`segfew --help` reaches it through segfew.data: run.json's module "
                          "loads when a split is written",
    "segfew.spec.parts": "the specs build `--help`'s options: pre-processing's and training's "
                         "own types (torch) load when a job asks for them",
    "segfew.synth": "`segfew synth --help` reads its spec: nibabel and scipy load when "
                    "phantoms are written",
    "segfew.runinfo": "torch's thread count is read only where torch is loaded already: "
                      "`label`, `split` and `synth` record run.json without torch",
    "segfew.inference.nnunet": "nnunetv2 is an optional extra (segfew[nnunet]): it loads when "
                               "an nnU-Net folder segments",
    "segfew.inference.saliency": "captum is slow to load and only `--explain` (Grad-CAM) "
                                 "needs it",
}


def _function_imports(path: Path) -> list[str]:
    """``line: import`` of each import inside a function (or a method) of ``path``."""
    found: list[str] = []

    def visit(node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom) and inside:
                found.append(f"{child.lineno}: {ast.unparse(child)}")
            visit(child, inside or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def _lazy_allowed(name: str) -> bool:
    return any(name == key or name.startswith(key + ".") for key in LAZY_IMPORTS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _name(p))
def test_imports_are_at_the_top_of_modules(path: Path) -> None:
    if _lazy_allowed(_name(path)):
        return
    found = _function_imports(path)
    assert found == [], (f"{_name(path)} imports inside functions ({found}): import at the "
                         "top of the module, or add it to LAZY_IMPORTS with the reason")


def test_every_lazy_import_allowance_is_used() -> None:
    used = {key for key in LAZY_IMPORTS
            if any(_function_imports(p) for p in MODULES
                   if _name(p) == key or _name(p).startswith(key + "."))}
    assert used == set(LAZY_IMPORTS), f"unused: {sorted(set(LAZY_IMPORTS) - used)}"


#: slow to import and not needed to say what segfew offers
HEAVY = ("torch", "captum", "SimpleITK", "nibabel", "pydicom", "skimage", "sklearn", "scipy",
         "matplotlib")


def test_import_segfew_and_help_load_no_heavy_library() -> None:
    """``import segfew``, ``segfew --help`` and every ``segfew <command> --help`` load none
    of :data:`HEAVY`: the lazy imports above are what keeps them light."""
    code = (
        "import sys, segfew\n"
        "print('loaded:', sorted(m for m in HEAVY if m in sys.modules))\n"
        "from segfew.cli import COMMANDS, app\n"
        "for argv in [['--help'], *([c, '--help'] for _, _, c in COMMANDS)]:\n"
        "    try:\n"
        "        app(argv, standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('loaded:', sorted(m for m in HEAVY if m in sys.modules))\n"
    ).replace("HEAVY", repr(HEAVY))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    loaded = [line for line in out if line.startswith("loaded:")]
    assert loaded == ["loaded: []", "loaded: []"], f"import segfew, then --help: {loaded}"
