"""verl-gain's hydra configs as a package, so that other configs find them at ``pkg://verl_gain.trainer.config``
(hydra's pkg:// search path needs an ``__init__.py``; recipes/config/recipe.yaml uses it)."""
