"""The package's layers, checked from the source with `ast` (nothing is imported).

Layers, top to bottom (a module imports lower layers, and its own layer where said):
  1 commands             cli, cli_reference, __main__, doctor, demo, config_template
  2 train/sample/tools   train.*, sample.*, lora.*; train and sample never import each other,
                         lora tools import neither (train and sample may import lora.*, e.g. attach)
  3 data                 data.*
  4 runtime              runtime.*, distributed.*
  5 ltx                  ltx.* (the only modules that import ltx_core)
  6 files/config         files.* (one module per file format: safetensors headers, model files, LoRA files, text
                         features; atomic writes), config, official_config, bucket_spec, paths, errors, the package
  fixtures.* import layers 3-6 and each other; only cli and demo import fixtures.
And: no import cycles between our modules.

Every import counts: at the top, inside functions, and under `if TYPE_CHECKING:`. A type-only import still ties
the module to the other one's names (a lower layer that names an upper layer's types depends on it), and counting
all of them keeps the checker free of special cases.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "ltx_lora"

COMMANDS, TOOLS, DATA, RUNTIME, LTX, FILES = 1, 2, 3, 4, 5, 6
LAYER_NAMES = {COMMANDS: "commands", TOOLS: "train/sample/lora tools", DATA: "data", RUNTIME: "runtime", LTX: "ltx",
               FILES: "files/config"}
FIXTURES = "fixtures"
FIXTURE_USERS = {"ltx_lora.cli", "ltx_lora.demo"}  # the commands that build tiny models (demo, `ltx-lora demo`)
EXACT = {
    **dict.fromkeys(["ltx_lora.cli", "ltx_lora.cli_reference", "ltx_lora.__main__", "ltx_lora.doctor", "ltx_lora.demo",
                     "ltx_lora.config_template"], COMMANDS),
    **dict.fromkeys(["ltx_lora.config", "ltx_lora.task", "ltx_lora.task_catalog", "ltx_lora.official_config", "ltx_lora.bucket_spec", "ltx_lora.paths",
                     "ltx_lora.errors", "ltx_lora.progress", "ltx_lora"], FILES),
}
PACKAGES = {"ltx_lora.train": TOOLS, "ltx_lora.sample": TOOLS, "ltx_lora.lora": TOOLS, "ltx_lora.data": DATA,
            "ltx_lora.runtime": RUNTIME, "ltx_lora.distributed": RUNTIME, "ltx_lora.ltx": LTX,
            "ltx_lora.files": FILES, "ltx_lora.fixtures": FIXTURES}


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_of(module: str) -> int | str | None:
    if module in EXACT:
        return EXACT[module]
    for package, layer in PACKAGES.items():
        if in_package(module, package):
            return layer
    return None


def group_of(module: str) -> str | None:
    """train / sample / lora (the tools) for layer-2 modules: the groups that must not import each other."""
    for group in ("train", "sample", "lora"):
        if in_package(module, f"ltx_lora.{group}") and layer_of(module) == TOOLS:
            return group
    return None


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    file: str  # its path, for messages
    line: int
    text: str  # the import statement as written
    target: str  # imported module (ours: resolved to the most specific module that exists; others: as written)


def module_name(root: Path, file: Path) -> str:
    parts = list(file.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(name: str, ours: set[str]) -> str:
    """`ltx_lora.files.lora_file.KEY` -> `ltx_lora.files.lora_file`: the longest prefix that is one of our modules."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in ours:
            return ".".join(parts[:n])
    return name


def collect_imports(root: Path) -> tuple[dict[str, Path], list[Import]]:
    """Every module under root/ltx_lora and every import in it (anywhere in the file)."""
    files = {module_name(root, f): f for f in sorted((root / PACKAGE).rglob("*.py"))}
    ours = set(files)
    found = []
    for module, file in files.items():
        source = file.read_text(encoding="utf-8")
        rel = (Path(root.name) / file.relative_to(root)).as_posix()  # src/ltx_lora/...
        is_package = file.name == "__init__.py"
        for node in ast.walk(ast.parse(source, filename=str(file))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's package, one level up per extra dot
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # `from pkg import name`: name may be a submodule (files.lora_file) or an attribute of pkg
                names = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in ours else stem for a in node.names]
            elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)
                  and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                       or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
                names = [node.args[0].value]  # importlib.import_module("x"): a dynamic import of a fixed name
            if not names:
                continue
            text = _statement(node, source)
            for name in dict.fromkeys(names):
                target = _resolve(name, ours) if in_package(name, PACKAGE) else name
                if target != module:
                    found.append(Import(module, rel, node.lineno, text, target))
    return files, found


def _statement(node: ast.AST, source: str) -> str:
    """The import as one line (a parenthesised `from x import (a, b)` spans several)."""
    if isinstance(node, ast.Import):
        return "import " + ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
    if isinstance(node, ast.ImportFrom):
        names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
        return f"from {'.' * node.level}{node.module or ''} import {names}"
    return " ".join((ast.get_source_segment(source, node) or "").split())


def _where(imp: Import) -> str:
    return f"{imp.file}:{imp.line}: `{imp.text}`"


def check_ltx_core(imports: list[Import]) -> list[str]:
    return [f"{_where(i)}: imports ltx_core outside ltx_lora/ltx/ (every ltx-core call lives in the adapter, "
            "docs/DEVELOPING.md)" for i in imports
            if in_package(i.target, "ltx_core") and not in_package(i.source, "ltx_lora.ltx")]


def check_placed(files: dict[str, Path]) -> list[str]:
    return [f"{module} ({file.name}) is in no layer: place it in the layer map of tests/test_layers.py "
            "(EXACT or PACKAGES) so its imports can be checked" for module, file in files.items()
            if layer_of(module) is None]


def _rule_broken(source: str, target: str) -> str | None:
    """Why `source` may not import `target` (both ours and placed), or None when it may."""
    a, b = layer_of(source), layer_of(target)
    if b == FIXTURES:
        if a == FIXTURES or source in FIXTURE_USERS:
            return None
        return f"only {', '.join(sorted(FIXTURE_USERS))} and fixtures.* may import fixtures (test/demo helpers)"
    if a == FIXTURES:
        return None if b in (DATA, RUNTIME, LTX, FILES) else (
            f"fixtures import layers 3-6 only, not {LAYER_NAMES[b]} (layer {b})")
    if a == b == TOOLS:
        ga, gb = group_of(source), group_of(target)
        if {ga, gb} == {"train", "sample"}:
            return f"{ga} imports {gb}: train and sample must not import each other (layer 2)"
        if ga == "lora" and gb in ("train", "sample"):
            return f"lora tools import neither train nor sample (layer 2), but this imports {gb}"
        return None
    if a > b:
        return (f"back-arrow: {LAYER_NAMES[a]} (layer {a}) must not import {LAYER_NAMES[b]} (layer {b}); "
                "layers only point down")
    return None


def check_layers(imports: list[Import]) -> list[str]:
    problems = []
    for i in imports:
        if not in_package(i.target, PACKAGE) or layer_of(i.source) is None or layer_of(i.target) is None:
            continue  # not ours, or unplaced (check_placed reports those)
        why = _rule_broken(i.source, i.target)
        if why:
            problems.append(f"{_where(i)}: {i.source} -> {i.target}: {why}")
    return problems


def check_cycles(imports: list[Import]) -> list[str]:
    """One message per group of modules that import each other in a circle (strongly connected component)."""
    edges: dict[str, dict[str, Import]] = {}
    for i in imports:
        if in_package(i.target, PACKAGE):
            edges.setdefault(i.source, {}).setdefault(i.target, i)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm (the graph is small: recursion is fine)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)

    problems = []
    for comp in components:
        members = set(comp)
        path = _cycle_path(comp[0], edges, members)
        steps = [edges[a][b] for a, b in zip(path, path[1:], strict=False)]
        lines = "; ".join(f"{s.source} -> {s.target} at {_where(s)}" for s in steps)
        problems.append(f"import cycle {' -> '.join(path)} (modules in the circle: {', '.join(comp)}): {lines}")
    return problems


def _cycle_path(start: str, edges: dict[str, dict[str, Import]], members: set[str]) -> list[str]:
    """A shortest path start -> ... -> start inside one strongly connected component (breadth first)."""
    parent: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in edges.get(v, {}):
            if w not in members:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [start, *reversed(path[:-1]), start] if v != start else [start, start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"{start} is in a cycle but no path back was found")


def check_tree(root: Path) -> dict[str, list[str]]:
    """All rules for the package under root (a folder holding ltx_lora/); rule -> messages."""
    files, imports = collect_imports(root)
    return {"ltx_core only in ltx/": check_ltx_core(imports), "every module placed in a layer": check_placed(files),
            "layers point down": check_layers(imports), "no import cycles": check_cycles(imports)}


# ---- the real tree ----

def _report(rule: str) -> None:
    problems = check_tree(SRC)[rule]
    assert not problems, f"{len(problems)} import(s) break the rule '{rule}':\n" + "\n".join(problems)


def test_ltx_core_only_in_the_adapter():
    _report("ltx_core only in ltx/")


def test_every_module_is_placed():
    _report("every module placed in a layer")


def test_layers_point_down():
    _report("layers point down")


def test_no_import_cycles():
    _report("no import cycles")


# ---- the checker itself: it must catch what it is for, or the tests above pass for nothing ----

def _fake_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "ltx_lora" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_catches_what_it_should(tmp_path):
    root = _fake_tree(tmp_path, {
        "__init__.py": "",
        "errors.py": "def f():\n    from ltx_lora.train import step\n",  # back-arrow, inside a function
        "config.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ltx_core.model\n",
        "ltx/__init__.py": "",
        "ltx/models.py": "import ltx_core\nfrom ltx_core.x import y\n",  # allowed: the adapter
        "train/__init__.py": "",
        "train/step.py": "from ltx_lora.sample.media import write\nfrom ltx_lora.lora import attach\n",
        "sample/__init__.py": "",
        "sample/media.py": "from ltx_lora.data import cache\n",
        "lora/__init__.py": "",
        "lora/attach.py": "",
        "files/__init__.py": "",
        "files/lora_file.py": "from ltx_lora.errors import UserError\n",
        "lora/merge.py": "from ..files import lora_file\nfrom ..train.step import x\n",  # relative imports resolve
        "data/__init__.py": "",
        "data/cache.py": "from ltx_lora.data.scan import z\nfrom ltx_lora.fixtures import clips\n",
        "data/scan.py": "import ltx_lora.data.cache\n",  # cycle with cache
        "fixtures/__init__.py": "",
        "fixtures/clips.py": "from ltx_lora.demo import run\n",
        "demo.py": "",
        "newthing.py": "",
    })
    found = check_tree(root)
    text = {rule: "\n".join(msgs) for rule, msgs in found.items()}

    assert len(found["ltx_core only in ltx/"]) == 1  # the TYPE_CHECKING one in config.py; none from ltx/
    assert "ltx_lora/config.py:3: `import ltx_core.model`" in text["ltx_core only in ltx/"]

    assert found["every module placed in a layer"] == [
        "ltx_lora.newthing (newthing.py) is in no layer: place it in the layer map of tests/test_layers.py "
        "(EXACT or PACKAGES) so its imports can be checked"]

    layers = found["layers point down"]
    assert any("ltx_lora/errors.py:2: `from ltx_lora.train import step`: ltx_lora.errors -> ltx_lora.train.step: "
               "back-arrow: files/config (layer 6)" in m for m in layers), layers
    assert any("ltx_lora/train/step.py:1:" in m and "train imports sample" in m for m in layers), layers
    assert any("ltx_lora/lora/merge.py:2: `from ..train.step import x`" in m and "lora tools import neither" in m
               for m in layers), layers
    assert any("ltx_lora/data/cache.py:2:" in m and "only" in m and "fixtures" in m for m in layers), layers
    assert any("ltx_lora/fixtures/clips.py:1:" in m and "fixtures import layers 3-6 only" in m for m in layers)
    assert len(layers) == 5, layers  # train -> lora, lora.merge -> files.lora_file, sample -> data: allowed

    cycles = found["no import cycles"]
    assert len(cycles) == 1, cycles
    assert cycles[0].startswith("import cycle ltx_lora.data.cache -> ltx_lora.data.scan -> ltx_lora.data.cache")
    assert "ltx_lora/data/scan.py:1: `import ltx_lora.data.cache`" in cycles[0]
