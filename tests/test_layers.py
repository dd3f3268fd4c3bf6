"""The package's folders are its layers: imports run down, never in a cycle.

Each module belongs to a layer by its path; a module may import its own layer and the layers
below it. The few imports that run up are listed in ALLOWED_UP with their reason, so a new one
fails here and has to be argued for (or the code moved to where it belongs).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_joules"

#: lowest first; a module's layer is the first entry its dotted path (under pytest_joules.) starts with
LAYERS: list[tuple[str, ...]] = [
    ("errors", "values", "paths", "numbers", "_aliases", "__init__"),
    ("judge",),
    ("engines", "meters", "sim"),
    ("hookspecs", "builtin", "registry", "probes"),
    ("measure",),
    ("store",),
    ("models",),
    ("report",),
    ("plugin", "cli", "validation", "__main__"),
]

#: (importer, imported) pairs that run up a layer, each with its reason
ALLOWED_UP: dict[tuple[str, str], str] = {
    ("_aliases", "*"): "maps the 0.1 module paths to their new homes, importing on demand",
}


def layer_of(module: str) -> int:
    for i, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    raise AssertionError(f"pytest_joules.{module} is in no layer of tests/test_layers.py: add its folder there")


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every pytest_joules module `module` imports (top level or inside a function)."""
    is_pkg = path.name == "__init__.py"
    here = module if is_pkg else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = ".".join(p for p in (base, node.module or "") if p)
            elif (node.module or "").startswith("pytest_joules"):
                base = (node.module or "")[len("pytest_joules"):].lstrip(".")
            else:
                continue
            targets = [f"{base}.{a.name}".lstrip(".") for a in node.names]
            targets = [t if t in known else base for t in targets]
        elif isinstance(node, ast.Import):
            targets = [a.name[len("pytest_joules."):] for a in node.names if a.name.startswith("pytest_joules.")]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods) | {"__init__"}
    return {m: imports(m, p, known) - {"__init__"} for m, p in mods.items()}


def test_every_module_has_a_layer():
    for module in modules():
        layer_of(module)


def test_imports_run_down():
    up = []
    for module, targets in graph().items():
        for target in targets:
            if layer_of(target) > layer_of(module) and (module, "*") not in ALLOWED_UP and (module, target) not in ALLOWED_UP:
                up.append(f"{module} -> {target}")
    assert not up, "imports running up the layers (move the code, or list the import in ALLOWED_UP with its reason):\n  " + "\n  ".join(sorted(up))


def test_the_package_imports_no_old_path():
    """The 0.1 module paths (pytest_joules/_aliases.py) are for users' code: inside the package an
    import through one would hide which layer it reaches."""
    from pytest_joules._aliases import MOVED

    old = []
    for module, path in modules().items():
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level:
                here = module if path.name == "__init__.py" else module.rpartition(".")[0]
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                full = ".".join(p for p in (base, node.module or "") if p)
                for name in [full] + [f"{full}.{a.name}".lstrip(".") for a in node.names]:
                    if name in MOVED and module != "_aliases":
                        old.append(f"{module}: {name} (now {MOVED[name]})")
    assert not old, "imports of 0.1 module paths inside the package:\n  " + "\n  ".join(old)


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)
