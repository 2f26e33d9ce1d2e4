"""``make demo`` (``python -m verl_gain.demo``) and the runs the benchmarks make the same way.

- ``run``: one run's settings and the ``python -m verl_gain.main`` command line it launches.
- ``launcher``: runs ``python -m verl_gain.main`` in a subprocess and reads verl's metrics back.
- ``run_folder``: the files a run leaves behind.
- ``report``: plots and ``report.md`` from a run folder (needs the ``demo`` extra: matplotlib).
"""
