"""Probes from outside gespann's tree: a Python file or module that declares `PROBE` or `PROBES`.

A developer extending gespann writes a probe in its own file, as gespann's
own are written, and names it in the config (`extra_probes`); nothing is
forked. The probe is loaded into the privileged process like gespann's own
code, so only what the config names is ever imported: nothing is discovered.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

from ..toolkit.probe import Probe


class ExtensionError(Exception):
    """An extra probe that cannot be loaded; the message says which and why."""


def load_probes(source: str) -> tuple[Probe, ...]:
    """The probes `source` declares: a path to a `.py` file, or the dotted name of an importable module."""
    module = _load_file(source) if source.endswith(".py") or os.sep in source else _import(source)
    declared = getattr(module, "PROBES", None)
    if declared is None:
        single = getattr(module, "PROBE", None)
        declared = () if single is None else (single,)
    probes = tuple(declared)
    if not probes:
        raise ExtensionError(f"{source} declares no probe: define PROBE (a gespann.probes.Probe) or PROBES")
    for probe in probes:
        if not isinstance(probe, Probe):
            raise ExtensionError(f"{source}: {probe!r} is not a gespann.probes.Probe")
    return probes


def _load_file(path: str) -> ModuleType:
    """The module at `path`, imported once under a name of its own (a second load gives the same module)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ExtensionError(f"{path}: no such file")
    name = "gespann_extra_" + os.path.splitext(os.path.basename(path))[0]
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == path:
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ExtensionError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise ExtensionError(f"{path} failed to load: {type(err).__name__}: {err}") from err
    return module


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as err:
        raise ExtensionError(f"module {name} failed to load: {type(err).__name__}: {err}") from err
