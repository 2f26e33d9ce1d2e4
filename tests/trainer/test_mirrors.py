"""The mirror ledger: every verl function verl-gain restates is hashed, and a change of its installed source fails
here, naming the function (``verl_gain/trainer/mirrors.py``)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from verl_gain.trainer.mirrors import MIRRORS, MirrorChanged, changed_mirrors, check_mirrors, resolve, source_sha256
from verl_gain.verl_version import TESTED_VERL, installed_verl_version


@pytest.mark.parametrize("mirror", MIRRORS, ids=lambda m: m.theirs)
def test_the_installed_source_is_the_one_each_mirror_follows(mirror):
    assert installed_verl_version() == TESTED_VERL
    assert not changed_mirrors((mirror,)), changed_mirrors((mirror,))[0]


@pytest.mark.parametrize("mirror", MIRRORS, ids=lambda m: m.ours)
def test_our_side_of_each_mirror_exists(mirror):
    resolve(mirror.ours)


def test_a_changed_hash_fails_naming_the_function():
    """A ledger entry whose hash is not the installed source's (what a verl upgrade that edits the function gives)."""
    entry = next(m for m in MIRRORS if m.theirs == "verl.trainer.main_ppo:TaskRunnerV1.run")
    tampered = dataclasses.replace(entry, sha256="0" * 64)
    check_mirrors((entry,))
    with pytest.raises(MirrorChanged, match=re.escape("verl.trainer.main_ppo:TaskRunnerV1.run changed")) as caught:
        check_mirrors((MIRRORS[0], tampered))
    message = str(caught.value)
    assert "verl_gain.trainer.runners:GainTaskRunnerV1.run" in message and MIRRORS[0].theirs not in message


def test_a_changed_source_changes_the_hash(tmp_path, monkeypatch):
    """The hash follows the source text: a module with one line of a function changed hashes differently."""
    import sys

    module = tmp_path / "mirrored_module.py"
    module.write_text("def run(config):\n    return config.trainer\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = source_sha256("mirrored_module:run")
    module.write_text("def run(config):\n    return config.trainer.v1\n")
    sys.modules.pop("mirrored_module")
    assert source_sha256("mirrored_module:run") != before
    monkeypatch.delitem(sys.modules, "mirrored_module")


def test_the_dispatch_attributes_are_the_base_methods():
    """The re-registered ``compute_log_prob`` and the pre-pass method are dispatched exactly as verl's method is."""
    from verl.single_controller.base.decorator import MAGIC_ATTR
    from verl.workers.engine_workers import ActorRolloutRefWorker

    from verl_gain.trainer.worker import GainActorRolloutRefWorker

    base = getattr(ActorRolloutRefWorker.compute_log_prob, MAGIC_ATTR)
    assert getattr(GainActorRolloutRefWorker.compute_log_prob, MAGIC_ATTR) == base
    assert getattr(GainActorRolloutRefWorker.gain_score_prompts, MAGIC_ATTR) == base
