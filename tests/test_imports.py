"""The package's structure: every module imports alone, the import graph has no cycle, the repository is
self-contained (no citation of files outside it) and every module says what it is for."""
from __future__ import annotations

import ast
import os
import pathlib
import re
import subprocess
import sys

import pytest

import mfkern

PACKAGE_DIR = pathlib.Path(mfkern.__file__).resolve().parent  # what is imported (an installed copy in CI)
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
IN_REPOSITORY = (REPO_ROOT / "pyproject.toml").exists() and (REPO_ROOT / "python" / "mfkern").is_dir()
SOURCE_DIR = REPO_ROOT / "python" / "mfkern" if IN_REPOSITORY else PACKAGE_DIR  # what is checked statically


# ------------------------------------------------------------------------------------------ the graph
def module_files(package_dir, package_name):
    """Module name -> file of every .py under `package_dir` (packages by their __init__); compiled modules
    (known by their stub or their binary) map to None: they import nothing of the package."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join([package_name, *parts])] = path
    for pattern in ("*.pyi", "*.so", "*.pyd"):
        for path in package_dir.rglob(pattern):
            parts = list(path.relative_to(package_dir).parts)
            parts[-1] = parts[-1].split(".")[0]
            modules.setdefault(".".join([package_name, *parts]), None)
    return modules


def _package_of(module, path):
    """The package a module's relative imports start from."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _parents(name):
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def import_edges(modules, package_name):
    """module -> set of modules of the package it imports: top-level, function-level and relative imports.

    ``from P import name`` imports the submodule P.name when there is one, else P itself (a name defined in
    P); importing a module runs its parent packages first, which counts too, except the importer's own
    ancestors (they are already being imported when it runs)."""
    edges = {module: set() for module in modules}
    for module, path in modules.items():
        if path is None:
            continue
        ancestors = _parents(module)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = _package_of(module, path)
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                if target != package_name and not target.startswith(package_name + "."):
                    continue
                for name in {target} | (_parents(target) - ancestors):
                    if name in modules and name != module:
                        edges[module].add(name)
    return edges


def cycles(edges):
    """The strongly connected components with more than one module (Tarjan), each as a cycle through it."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(_cycle_through(sorted(component), edges))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _cycle_through(component, edges):
    """One cycle inside a strongly connected component, as a list [a, b, ..., a]."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth-first search for the shortest path back to start
        following = []
        for node in frontier:
            for successor in sorted(edges[node] & members):
                if successor == start:
                    return paths[node] + [start]
                if successor not in paths:
                    paths[successor] = paths[node] + [successor]
                    following.append(successor)
        frontier = following
    raise AssertionError(f"{component} is not strongly connected")


def describe(found):
    return "; ".join(" -> ".join(cycle) for cycle in found)


def test_the_cycle_finder_finds_cycles_and_only_cycles(tmp_path):
    """The checker itself, on a small package written here: relative, absolute and function-level imports."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text('"""p."""\nfrom .a import f\n')
    (package / "a.py").write_text('"""a."""\nfrom . import b\n\ndef f():\n    from .sub import c\n')
    (package / "b.py").write_text('"""b."""\nimport pkg.leaf\n')
    (package / "leaf.py").write_text('"""leaf."""\nimport os\nfrom . import _ext\n')
    (package / "_ext.pyi").write_text("def h() -> None: ...\n")
    (package / "sub" / "__init__.py").write_text('"""sub."""\n')
    (package / "sub" / "c.py").write_text('"""c."""\ndef g():\n    from ..a import f\n')
    edges = import_edges(module_files(package, "pkg"), "pkg")
    assert edges["pkg"] == {"pkg.a"} and edges["pkg.b"] == {"pkg.leaf"} and edges["pkg.leaf"] == {"pkg._ext"}
    assert edges["pkg.a"] == {"pkg.b", "pkg.sub", "pkg.sub.c"} and edges["pkg.sub.c"] == {"pkg.a"}
    assert describe(cycles(edges)) == "pkg.a -> pkg.sub.c -> pkg.a"
    (package / "sub" / "c.py").write_text('"""c."""\nimport os\n')
    assert cycles(import_edges(module_files(package, "pkg"), "pkg")) == []


MODULES = module_files(SOURCE_DIR, "mfkern")
EDGES = import_edges(MODULES, "mfkern")
def test_the_import_graph_of_mfkern_has_no_cycle():
    found = cycles(EDGES)
    assert not found, f"import cycles: {describe(found)}"


# --------------------------------------------------------------------------- every module imports alone
IMPORTABLE = sorted(name for name, path in MODULES.items() if path is not None and not name.endswith("__main__"))


@pytest.fixture(scope="module")
def fresh_imports():
    """module -> (exit status, stderr) of ``python -c "import module"`` in a fresh interpreter each, a few
    interpreters at a time."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(PACKAGE_DIR.parent)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    pending, running, results = list(IMPORTABLE), {}, {}
    width = max(2, min(8, os.cpu_count() or 1))
    while pending or running:
        while pending and len(running) < width:
            module = pending.pop(0)
            running[module] = subprocess.Popen([sys.executable, "-c", f"import {module}"], env=env, text=True,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                               cwd=str(pathlib.Path(__file__).parent))
        module = next(iter(running))
        process = running.pop(module)
        _, stderr = process.communicate(timeout=300)
        results[module] = (process.returncode, stderr)
    return results


@pytest.mark.parametrize("module", IMPORTABLE)
def test_every_module_imports_alone_in_a_fresh_interpreter(fresh_imports, module):
    status, stderr = fresh_imports[module]
    assert status == 0, f"import {module} failed:\n{stderr[-3000:]}"


def test_every_module_says_what_it_is_for():
    missing = [name for name, path in MODULES.items() if path is not None
               and not (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "").strip()]
    assert not missing, f"modules without a docstring: {missing}"


def private_names_imported_across_modules(path):
    """(module, name) for every underscore name a module imports from another module of its package (the
    compiled module, the argument checks and the version, which are private modules, excepted)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            found += [(node.module, a.name) for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__") and a.name != "_core"]
    return found


def test_the_private_import_finder_finds_them(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from .a import _hidden, shown\nfrom . import _core\nfrom b import _external\n")
    assert private_names_imported_across_modules(module) == [("a", "_hidden")]


def test_no_module_imports_another_modules_private_names():
    found = {name: private_names_imported_across_modules(path) for name, path in MODULES.items() if path is not None}
    found = {name: names for name, names in found.items() if names}
    assert not found, f"private names imported across modules (give them public names): {found}"


# ------------------------------------------------------------------------------------- the benchmarks
@pytest.mark.skipif(not (REPO_ROOT / "bench" / "__init__.py").exists(), reason="needs the repository's bench/")
def test_the_benchmark_modules_have_no_import_cycle_and_docstrings():
    bench = module_files(REPO_ROOT / "bench", "bench")
    found = cycles(import_edges(bench, "bench"))
    assert not found, f"import cycles in bench/: {describe(found)}"
    missing = [name for name, path in bench.items() if not ast.get_docstring(ast.parse(path.read_text()))]
    assert not missing, f"benchmark modules without a docstring: {missing}"


# ------------------------------------------------------------------------------------ self-containment
# Built from pieces, so that this file does not match itself.
OUTSIDE = re.compile("|".join([re.escape("../" + "shared"), r"PAPER\.md", r"TOOL" + r"CHAIN\.md",
                               r"ARCHI" + r"TECTURE\.md"]))
SKIP_DIRS = {".git", "build", "dist", "third_party", "__pycache__", ".venv", "venv", ".pytest_cache",
             "mfkern-results", ".hypothesis"}


def repository_text_files():
    for directory, subdirectories, files in os.walk(REPO_ROOT):
        subdirectories[:] = [d for d in subdirectories if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = pathlib.Path(directory, name)
            if path.suffix in (".so", ".png", ".npz", ".npy", ".pyc", ".whl"):
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            yield path.relative_to(REPO_ROOT).as_posix(), text


def outside_citations():
    return sorted(f"{relative}:{number}" for relative, text in repository_text_files()
                  for number, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line))


@pytest.mark.skipif(not IN_REPOSITORY, reason="checks the repository's files (not found next to the tests)")
def test_no_file_cites_a_document_outside_the_repository():
    hits = outside_citations()
    assert not hits, f"cite docs/theory.md sections instead: {hits}"


# ------------------------------------------------------------------------------- the compiled module's stub
def _stub():
    tree = ast.parse((PACKAGE_DIR / "_core.pyi").read_text(encoding="utf-8"))
    functions = {node.name: [arg.arg for arg in node.args.args] for node in tree.body
                 if isinstance(node, ast.FunctionDef)}
    names = set(functions)
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names, functions


def test_the_typing_files_are_installed_with_the_package():
    assert (PACKAGE_DIR / "_core.pyi").is_file() and (PACKAGE_DIR / "py.typed").is_file()


def test_the_stub_of_the_compiled_module_matches_it():
    """Every public name of mfkern._core is in _core.pyi and nothing else is; each function's parameters
    are those of its binding (read from the signature line pybind11 puts in the docstring)."""
    from mfkern import _core

    names, functions = _stub()
    public = {name for name in dir(_core) if not name.startswith("_")}
    assert names - {"_Array"} == public
    for name, parameters in functions.items():
        signature = getattr(_core, name).__doc__.splitlines()[0]
        match = re.match(rf"{name}\((.*)\) -> ", signature)
        assert match, signature
        bound = [part.split(":")[0].strip() for part in re.split(r",\s*(?![^\[]*\])", match.group(1)) if part]
        assert parameters == bound, f"{name}: stub {parameters}, binding {bound}"
