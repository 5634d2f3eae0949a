"""Shared fixtures: a tiny dictionary and task for unit tests, a tiny prepared Multi30k slice and a
trained checkpoint for the CLI tests (built once per test session)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

# One intra-op thread for the tests and every command they start: the models are tiny, and on a
# 2-core machine two torch threads per process, with a test command running beside pytest's own
# process (or another job), oversubscribe the cores and can make a step 100x slower.
# Set OMP_NUM_THREADS to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
# A command killed by a fatal signal (SIGABRT, SIGSEGV) prints every thread's Python stack to its
# stderr, which a failed run() shows, so an abort can be traced to the thread that caused it (as
# the abort at fairseq-train's exit was, to fairseq's prefetching thread: see clean_exit).
os.environ.setdefault("PYTHONFAULTHANDLER", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
USER_DIR = str(REPO_ROOT / "fairseq_smallcap")
MULTI30K = Path(os.environ.get("SMALLCAP_DATA", REPO_ROOT.parent / "shared" / "data")) / "multi30k"
BIN = Path(sys.executable).parent


def run(cmd, check=True, **kwargs):
    """Run a CLI command, returning the CompletedProcess (stdout and stderr as text)."""
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd[0]} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def error_lines(stderr):
    """stderr without the INFO line fairseq prints when its tasks are imported (tensorboardX)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("INFO:")]


def tool(name):
    return str(BIN / name)


TRAIN_FLAGS = [
    "--user-dir", USER_DIR, "--task", "unsupervised_translation", "--arch", "smallcap_very_small",
    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
    "--decoder-ffn-embed-dim", "64", "--decoder-layers", "2",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--optimizer", "adam", "--lr", "0.001", "--max-tokens", "600", "--cpu", "--seed", "1",
    "--log-format", "simple", "--log-interval", "1", "--num-workers", "0", "--no-epoch-checkpoints",
    "--max-valid-steps", "2", "--bt-show-samples-interval", "1",
]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A prepared slice of Multi30k: 300 training lines per language, small vocabulary."""
    if not MULTI30K.is_dir():
        pytest.fail(f"Multi30k not found at {MULTI30K}: set SMALLCAP_DATA to the shared data directory")
    dest = tmp_path_factory.mktemp("data") / "multi30k-tiny"
    run([tool("smallcap-prepare"), "--multi30k", "--raw-dir", MULTI30K, "--dest", dest,
         "--max-train-lines", "300", "--vocab-size", "400", "--soft-vocab-limit"])
    return dest


@pytest.fixture(scope="session")
def trained_checkpoint(tiny_data, tmp_path_factory):
    """A checkpoint after 3 updates of MASS + DAE + BT (the objectives all on)."""
    save_dir = tmp_path_factory.mktemp("ckpt")
    result = run([tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, "--lambda-mass", "1",
                  "--lambda-dae", "1", "--lambda-bt", "1", "--max-update", "3",
                  "--save-dir", save_dir, "--eval-bleu"])
    return save_dir / "checkpoint_last.pt", result.stdout
