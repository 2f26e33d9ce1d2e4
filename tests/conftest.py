"""Test-wide settings: no network (Hugging Face hub offline), few threads on the 2-core CI machine."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

E2E_MARKER = "e2e"
"""``@pytest.mark.e2e(launches=N)``: the test (or module) runs verl's trainer end to end, N launches in all."""


def trainer_launches(item) -> int:
    marker = item.get_closest_marker(E2E_MARKER)
    return 0 if marker is None else int(marker.kwargs.get("launches", 1))


def pytest_collection_modifyitems(config, items) -> None:
    """The end-to-end tests first, those with the most trainer launches first (the order is stable otherwise).

    ``make test`` runs the tests on 2 pytest-xdist workers, a module at a time (``--dist loadscope
    --no-loadscope-reorder``): a launch leaves about a third of the 2 cores idle (process start-up, waits on Ray),
    which the other worker fills with the fast tests. Started last, a long module would run alone at the end.
    """
    items.sort(key=lambda item: -trainer_launches(item))
