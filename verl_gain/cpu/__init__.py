"""verl-gain's CPU backend for verl 0.9: verl's own trainer on a machine without an accelerator (docs/cpu.md).

- ``platform``: verl platform "cpu" (selected with ``VERL_PLATFORM=cpu``)
- ``adaptations``: the version-guarded patches and config values the trainer needs on CPU, with their ledger
- ``rollout``: the "hf" rollout backend (batched Hugging Face ``generate``, verified weight sync)
- ``config``: ``apply_cpu_defaults(config, user_overrides)``, only when ``trainer.device=cpu``
- ``environment``: the variables that select the backend in every process (``worker_env_vars()`` for Ray actors
  with their own runtime env) and the names it registers (platform "cpu", rollout "hf")
- ``backend``: ``activate()`` in the driver, ``activate_in_worker()`` in every process (through the plugin)
- ``plugin``: verl's ``verl.plugins`` entry point, loaded on ``import verl`` in every process

Kept import-free: the plugin imports this package in every verl process.
"""
