"""The verl releases verl-gain supports: one guard for the CPU backend and the GAIN integration.

Both lean on verl internals that move between releases (the CPU ledger in ``verl_gain/cpu/adaptations.py``, the
trainer hooks and mirrored functions in ``verl_gain/trainer/compat.py``), so any verl outside the tested range is
refused before anything starts, with what to install. The version is read from the package metadata: checking it
never imports verl (the CPU plugin calls this in the middle of ``import verl``).
"""

from __future__ import annotations

import importlib.metadata

from packaging.specifiers import SpecifierSet
from packaging.version import Version

SUPPORTED_VERL_RANGE = ">=0.9.1,<0.9.2"
"""The verl releases the integration and the CPU backend are written for: the one the tests pin. The mirror ledger
(``verl_gain/trainer/mirrors.py``) hashes 0.9.1's sources and the CPU ledger checks 0.9.1's lines, so another release
is refused until the tests have run on it (they name every mirrored function that changed)."""
TESTED_VERL = "0.9.1"
"""The release the test suite runs against (``pyproject.toml`` pins the range above)."""


class UnsupportedVerlVersion(RuntimeError):
    """The installed verl is outside ``SUPPORTED_VERL_RANGE`` (one line: what to install)."""


def installed_verl_version() -> str:
    """The installed verl's version string (package metadata; verl is not imported)."""
    try:
        return importlib.metadata.version("verl")
    except importlib.metadata.PackageNotFoundError:
        raise UnsupportedVerlVersion(
            f"verl is not installed: pip install 'verl{SUPPORTED_VERL_RANGE}' torch==<your torch>"
        ) from None


def check_verl_version(version: str | None = None) -> str:
    """Return the verl version, or raise ``UnsupportedVerlVersion`` saying which range verl-gain supports."""
    version = version or installed_verl_version()
    if Version(version) not in SpecifierSet(SUPPORTED_VERL_RANGE):
        raise UnsupportedVerlVersion(
            f"verl-gain supports verl {SUPPORTED_VERL_RANGE} (tested on {TESTED_VERL}) but verl {version} is "
            f"installed: pip install 'verl{SUPPORTED_VERL_RANGE}' torch==<your torch>"
        )
    return version
