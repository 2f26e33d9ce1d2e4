"""Run a function on a module right after it is imported (or now, if it already is).

The CPU adaptations patch verl modules that are imported late and in different orders in each process (driver,
task runner, trainer workers, rollout servers). Importing them eagerly from the plugin, which verl loads in the
middle of ``import verl``, would pull half of verl in every process and risks circular imports; a post-import hook
patches each module exactly when it is first loaded instead, before any other module can import names from it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable
from types import ModuleType

ModuleHook = Callable[[ModuleType], None]

_lock = threading.RLock()
_pending: dict[str, list[ModuleHook]] = {}


class _HookedLoader(importlib.abc.Loader):
    """Delegates loading to the real loader, then runs the hooks registered for the module."""

    def __init__(self, loader: importlib.abc.Loader, fullname: str):
        self._loader = loader
        self._fullname = fullname

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # The module's spec must keep pointing at the real loader (importlib.reload, pickling by reference).
        module.__spec__.loader = self._loader
        module.__loader__ = self._loader
        self._loader.exec_module(module)
        _run_hooks(self._fullname, module)

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """A meta-path finder that only wraps the loader of modules with pending hooks."""

    def find_spec(self, fullname: str, path, target=None):
        with _lock:
            if fullname not in _pending:
                return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None:
            return spec
        spec.loader = _HookedLoader(spec.loader, fullname)
        return spec


_finder = _PostImportFinder()


def _run_hooks(fullname: str, module: ModuleType) -> None:
    with _lock:
        hooks = _pending.pop(fullname, [])
    for hook in hooks:
        hook(module)


def when_imported(module_name: str, hook: ModuleHook) -> None:
    """Call ``hook(module)`` once ``module_name`` is imported: now if it already is, else right after its import.

    A hook that raises makes the import fail, so a patch whose target moved surfaces at the import that needs it.
    """
    with _lock:
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
        module = sys.modules.get(module_name)
        if module is None:
            _pending.setdefault(module_name, []).append(hook)
            return
    hook(module)


def pending_modules() -> tuple[str, ...]:
    """Names of modules whose hooks have not run yet (not imported in this process so far)."""
    with _lock:
        return tuple(_pending)


class _BlockedPackageFinder(importlib.abc.MetaPathFinder):
    """Refuses to import a package (and its submodules) in this process, as if it were not installed."""

    def __init__(self, package: str, reason: str):
        self.package = package
        self.reason = reason

    def find_spec(self, fullname: str, path, target=None):
        if fullname == self.package or fullname.startswith(self.package + "."):
            raise ModuleNotFoundError(f"{fullname} is not imported in this process: {self.reason}", name=fullname)
        return None


def block_package(package: str, reason: str) -> bool:
    """Make ``import <package>`` (and its submodules) fail in this process with ``ModuleNotFoundError(reason)``.

    Returns False, and blocks nothing, if the package is already imported (a half-blocked package would be worse).
    """
    with _lock:
        if package in sys.modules or any(
            isinstance(f, _BlockedPackageFinder) and f.package == package for f in sys.meta_path
        ):
            return package not in sys.modules
        sys.meta_path.insert(0, _BlockedPackageFinder(package, reason))
        return True
