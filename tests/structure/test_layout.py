"""The architecture, held by the code: imports point one way, and nothing outside a probe's package names it.

The layers, lowest first: asm and btf (and what every layer shares: figures,
vocabulary, settings), bpf, probes, collector, exporters, config, then check and the
CLI. A module may import its own layer and those below, at module level or
inside a function alike: a lazy import that climbs is still a climb.
"""
import ast
import functools
import re
import sys
from pathlib import Path

import pytest

from gespann.probes import ALL_PROBES, EXAMPLE_PROBES

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {
    "asm": 0, "gespann.btf": 0, "gespann.figures": 0, "gespann.vocabulary": 0, "gespann.bpf": 1,
    "gespann.probes": 2, "gespann.collector": 3, "gespann.exporters": 4, "gespann.settings": 0,
    "gespann.config": 5, "gespann.check": 6, "gespann.cli": 7, "gespann.__main__": 8, "gespann": 0,
}


@functools.lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    found = {}
    for path in [*(ROOT / "gespann").rglob("*.py"), *(ROOT / "asm").rglob("*.py")]:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


@functools.lru_cache(maxsize=None)
def imports(name: str, path: Path) -> frozenset[str]:
    """Every module `name` imports, resolved, wherever in the file the import is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(module for module in out if module.split(".")[0] in ("gespann", "asm"))


def layer(module: str) -> int:
    while module not in LAYERS:
        module = module.rpartition(".")[0]
    return LAYERS[module]


def test_no_import_climbs_a_layer():
    climbs = [f"{name} ({layer(name)}) imports {target} ({layer(target)})"
              for name, path in modules().items() for target in imports(name, path)
              if target in modules() and layer(target) > layer(name)]
    assert climbs == []


def probe_modules() -> dict[str, str]:
    """Each probe's name -> the module that writes its program."""
    return {probe.name: sys.modules[probe.body.__module__].__name__ for probe in (*ALL_PROBES, *EXAMPLE_PROBES)}


@pytest.mark.parametrize("probe, module", sorted(probe_modules().items()))
def test_nothing_outside_a_probes_package_names_it(probe, module):
    """Neither its name nor its module, outside its own package; the list of probes
    (gespann/probes/__init__.py) is the one place that may. (drops/ uses TCP's and UDP's shared maps, which
    are not probes.)"""
    package = module.rpartition(".")[0]
    named = re.compile(rf"\b{probe}\b(?!\.h)")
    naming = []
    for name, path in modules().items():
        if name == package or name.startswith(package + ".") or name == "gespann.probes":
            continue
        if named.search(path.read_text()):
            naming.append(f"{name} names {probe}")
        naming.extend(f"{name} imports {target}" for target in imports(name, path) if target == module)
    assert naming == []


AUTHORED_ON_THE_PUBLIC_MODULE = sorted([*(ROOT / "examples" / "probes").glob("*.py"),
                                        ROOT / "gespann" / "probes" / "examples" / "tcp_states.py",
                                        ROOT / "gespann" / "probes" / "drops" / "inbound_refused.py"])


@pytest.mark.parametrize("path", AUTHORED_ON_THE_PUBLIC_MODULE, ids=lambda path: path.name)
def test_example_probes_import_only_the_authoring_module(path):
    """What a probe author sees: the examples, and the in-tree probes written as examples, import gespann only
    through gespann.probes.authoring, so that internal modules may move without breaking them."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module if not node.level else "." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    ours = {name for name in imported if name.startswith((".", "gespann", "asm"))}
    assert ours == {"gespann.probes.authoring"}
