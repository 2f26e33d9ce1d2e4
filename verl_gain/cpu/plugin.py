"""verl plugin entry point (group ``verl.plugins``): verl imports this module on ``import verl`` in every process.

Filled in by the CPU backend; kept import-light because it runs in every verl process.
"""
