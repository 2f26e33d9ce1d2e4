"""verl plugin entry point (group ``verl.plugins``, and ``VERL_USE_EXTERNAL_MODULES`` in CPU runs).

verl imports this module on ``import verl`` in every process (Ray workers too). It does nothing unless the process
runs on the CPU platform (``VERL_PLATFORM=cpu``, set by ``python -m verl_gain.main trainer.device=cpu``); then it
installs the CPU adaptations (``verl_gain.cpu.adaptations``). Kept import-light: it runs in every verl process.

verl logs a failing entry point at DEBUG level only, which would leave a bare "Unknown platform 'cpu'" later on;
so a failure here is printed with its reason before it propagates.
"""

import sys

try:
    from verl_gain.cpu.backend import activate_in_worker

    activate_in_worker()
except Exception as error:
    print(f"[verl-gain] CPU backend not installed in this process: {type(error).__name__}: {error}", file=sys.stderr)
    raise
