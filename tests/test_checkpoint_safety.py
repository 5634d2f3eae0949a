"""Checkpoints load with torch's weights-only unpickler; anything else in them is refused."""
import argparse
import collections
import os

import numpy as np
import pytest
import torch

import fairseq_smallcap  # noqa: F401  (installs the allowlist)
from fairseq import checkpoint_utils
from fairseq_smallcap.checkpoint_safety import UnsafeCheckpointError


class Smuggled:
    """Stands for arbitrary pickled code: unpickling it would call this class."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def fairseq_like_state():
    return {
        "args": argparse.Namespace(arch="smallcap_very_small", lr=[0.001]),
        "cfg": {"model": {"_name": "smallcap_very_small"}},
        "model": collections.OrderedDict(w=torch.zeros(2, 2)),
        "extra_state": {"metrics": {"bleu": np.array([1.0, 2.0]), "best": np.float64(3.5),
                                    "count": np.int64(4)}},
        "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion",
                               "optimizer_name": "Adam", "num_updates": 3,
                               "lr_scheduler_state": {"best": np.float64(2.0)}}],
        "last_optimizer_state": {"state": {}, "param_groups": []},
    }


def test_fairseq_checkpoint_types_load_weights_only(tmp_path):
    path = tmp_path / "ok.pt"
    torch.save(fairseq_like_state(), path)
    state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert state["args"].arch == "smallcap_very_small"
    assert float(state["extra_state"]["metrics"]["best"]) == 3.5
    # the weights-only loader itself is still in force (nothing turned it off)
    torch.load(path, weights_only=True)


def test_checkpoint_with_smuggled_object_is_refused(tmp_path):
    state = fairseq_like_state()
    state["extra_state"]["payload"] = Smuggled()
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    message = str(err.value)
    assert str(path) in message and "the global posix.system" in message
    assert "refusing to load checkpoint" in message


def test_fairseq_generate_refuses_smuggled_checkpoint_with_clear_message(tmp_path, tiny_data, trained_checkpoint):
    from conftest import USER_DIR, run, tool

    ckpt, _ = trained_checkpoint
    state = torch.load(ckpt, weights_only=True)
    state["extra_state"]["payload"] = Smuggled()
    evil = tmp_path / "evil_checkpoint.pt"
    torch.save(state, evil)
    result = run([tool("fairseq-generate"), tiny_data, "--user-dir", USER_DIR, "--task",
                  "unsupervised_translation", "-s", "en", "-t", "fr", "--gen-subset", "test",
                  "--path", evil, "--cpu", "--max-sentences", "2"], check=False)
    assert result.returncode == 2
    assert f"error: refusing to load checkpoint {evil}" in result.stderr
    assert "Traceback" not in result.stderr
