"""Post-import hooks: a hook runs once, right after its module's first import (or at once if already imported)."""

import importlib
import sys

import pytest

from verl_gain.cpu.import_hooks import pending_modules, when_imported


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A throwaway package ``hooktarget_<n>`` with a submodule ``mod`` defining ``VALUE = 1``."""
    name = f"hooktarget_{tmp_path.name.replace('-', '_')}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "mod.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


def test_hook_runs_after_the_first_import_only(package):
    seen = []
    when_imported(f"{package}.mod", lambda module: seen.append(module.VALUE))
    assert seen == [] and f"{package}.mod" in pending_modules()
    module = importlib.import_module(f"{package}.mod")
    assert seen == [1] and module.VALUE == 1
    importlib.import_module(f"{package}.mod")
    assert seen == [1] and f"{package}.mod" not in pending_modules()
    assert module.__spec__.loader.__class__.__name__ != "_HookedLoader"  # the real loader stays on the module


def test_hook_on_an_imported_module_runs_at_once(package):
    module = importlib.import_module(f"{package}.mod")
    seen = []
    when_imported(f"{package}.mod", lambda m: seen.append(m))
    assert seen == [module]


def test_hook_can_patch_before_other_modules_import_names(package):
    when_imported(f"{package}.mod", lambda module: setattr(module, "VALUE", 2))
    namespace = {}
    exec(f"from {package}.mod import VALUE", namespace)
    assert namespace["VALUE"] == 2


def test_failing_hook_fails_the_import(package):
    def refuse(module):
        raise RuntimeError("target moved")

    when_imported(f"{package}.mod", refuse)
    with pytest.raises(RuntimeError, match="target moved"):
        importlib.import_module(f"{package}.mod")
