"""The config an entry point hands to verl's ``run_ppo``, written to a file instead of training.

    python recipes/smoke/resolved_config.py verl      OUT.yaml [hydra overrides]   # python -m verl.trainer.main_ppo
    python recipes/smoke/resolved_config.py verl-gain OUT.yaml [hydra overrides]   # python -m verl_gain.main

Both entry points run exactly as on the command line (hydra composition, device choice, verl's ``auto_set_device``
and ``validate_config``) until they call ``verl.trainer.main_ppo.run_ppo``, which is replaced here by a function
that writes the config (resolved, as YAML) and the task runner class it was given, then exits. With
``gain.enable=False`` the two files must be identical: verl-gain then runs verl exactly
(``recipes/smoke/gpu_smoke.sh`` and ``tests/test_main.py`` compare them).
"""

from __future__ import annotations

import sys
from pathlib import Path

ENTRY_POINTS = ("verl", "verl-gain")
RUNNER_LINE = "# task runner: "


def write_resolved(config, task_runner_class, out: Path) -> None:
    """The replacement of ``run_ppo``: the resolved config and the runner class, then exit 0."""
    from omegaconf import OmegaConf

    runner = getattr(task_runner_class, "__ray_metadata__", None)
    runner_name = runner.class_name if runner is not None else getattr(task_runner_class, "__qualname__", "?")
    text = OmegaConf.to_yaml(config, resolve=True, sort_keys=True)
    out.write_text(f"{RUNNER_LINE}{runner_name}\n{text}")
    sys.exit(0)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] not in ENTRY_POINTS:
        sys.exit(f"usage: python {Path(__file__).name} {{{'|'.join(ENTRY_POINTS)}}} OUT.yaml [hydra overrides]")
    entry, out, overrides = argv[0], Path(argv[1]).resolve(), argv[2:]
    import verl.trainer.main_ppo as verl_main

    verl_main.run_ppo = lambda config, task_runner_class: write_resolved(config, task_runner_class, out)
    sys.argv = [entry, *overrides]
    if entry == "verl":
        verl_main.main()
    else:
        from verl_gain.main import main as verl_gain_main

        verl_gain_main()


if __name__ == "__main__":
    main(sys.argv[1:])
