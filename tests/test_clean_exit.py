"""A process that stops reading fairseq's prefetched batches mid-epoch exits 0, not SIGABRT.

fairseq-train stopped by --max-update leaves fairseq's prefetching thread (BackgroundConsumer)
collating batches; at exit, Python 3.11 unwinds that daemon thread through torch's C++ code and
the process aborts ("terminate called without an active exception"). Seen in CI at random, from
tiny fairseq-train runs. Here fairseq's own BufferedIterator is made busy on purpose: the batches
are torch work and the buffer holds the whole epoch, so the thread is always in torch when
the main thread returns.
"""
import json
import logging
import subprocess
import sys
import threading

import pytest

from conftest import REPO_ROOT, TRAIN_FLAGS
from test_teacher_topk import translation_flags

SCRIPT = """
import sys
import torch
from fairseq.data.iterators import BufferedIterator
import fairseq_smallcap
from fairseq_smallcap import clean_exit
assert not clean_exit._installed, "importing the plugin registered the exit handler"
if sys.argv[1] == "install":
    clean_exit.install()

class Batches:
    def __len__(self):
        return 10 ** 6
    def __iter__(self):
        x = torch.randn(128, 128)
        for _ in range(10 ** 6):
            for _ in range(20):
                x = torch.tanh(x @ x)
            yield x

itr = BufferedIterator(10 ** 6, Batches())
next(itr)
next(itr)
print("stopped mid-epoch", flush=True)
"""


def run_script(mode):
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)


def test_without_the_handler_the_scenario_aborts():
    """The control: without clean_exit the same process dies of SIGABRT (if a later Python or
    torch stops aborting here, this test says so, and clean_exit may be dropped)."""
    results = [run_script("none") for _ in range(2)]
    assert all(r.returncode == -6 for r in results), [(r.returncode, r.stderr[-500:]) for r in results]


@pytest.mark.parametrize("attempt", range(3))
def test_with_the_handler_the_process_exits_0(attempt):
    """The same process, with the handler installed, exits 0 every time."""
    result = run_script("install")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stopped mid-epoch" in result.stdout and "terminate called" not in result.stderr


def test_stopping_consumers_blocked_on_full_queues():
    """In process: fairseq's consumers whose queues are full (as after an early stop) end, and
    the count says so; the private attributes the handler uses exist in the pinned fairseq."""
    from fairseq.data.iterators import BackgroundConsumer, BufferedIterator

    from fairseq_smallcap import clean_exit

    iterators = [BufferedIterator(2, list(range(100))) for _ in range(2)]
    for itr in iterators:
        next(itr)
    consumers = [itr._consumer for itr in iterators]
    assert all(isinstance(c, BackgroundConsumer) and c.is_alive() for c in consumers)
    assert all(hasattr(c, "_max_len") and hasattr(c, "_queue") for c in consumers)
    assert clean_exit.stop_prefetch_threads(timeout=10) == 2
    assert not any(c.is_alive() for c in consumers)
    assert clean_exit.stop_prefetch_threads(timeout=10) == 0


COMPONENT_SCRIPT = """
import json, sys
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq_smallcap import clean_exit
from fairseq_smallcap.errors import SmallcapError
args = options.parse_args_and_arch(options.get_training_parser(), json.loads(sys.argv[1]))
cfg = convert_namespace_to_omegaconf(args)
assert not clean_exit._installed, "registered before any component was built"
task = tasks.setup_task(cfg.task)
assert not clean_exit._installed, "fairseq's translation task registered it"
task.build_model(cfg.model)
after_model = clean_exit._installed
try:
    task.build_criterion(cfg.criterion)
except SmallcapError as error:  # the KD criterion without a teacher: refused after __init__ began
    assert "needs a teacher" in str(error), error
print(json.dumps([after_model, clean_exit._installed]))
"""


@pytest.mark.parametrize("component", ["model", "criterion"])
def test_each_of_the_plugins_training_components_installs_it(tiny_data, component):
    """Built the way fairseq-train builds them under fairseq's translation task (which keeps the
    prefetching thread), our model registers the handler, and so does our KD criterion under
    fairseq's own transformer."""
    flags = translation_flags()
    if component == "criterion":
        flags[flags.index("smallcap_very_small")] = "transformer"
        flags[flags.index("--criterion") + 1] = "knowledge_distillation"
    result = subprocess.run([sys.executable, "-c", COMPONENT_SCRIPT, json.dumps([str(tiny_data), *flags])],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    installed = json.loads(result.stdout.splitlines()[-1])
    expected = {"model": [True, True], "criterion": [False, True]}
    assert installed == expected[component]


def test_our_task_builds_its_batches_without_the_thread(tiny_data, caplog):
    """unsupervised_translation needs no handler: even asked for a prefetch buffer, its batch
    iterator starts no consumer thread, and says once that the buffer is ignored."""
    caplog.set_level(logging.INFO)
    from fairseq import options, tasks
    from fairseq.data.iterators import BackgroundConsumer
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    args = options.parse_args_and_arch(options.get_training_parser(), [str(tiny_data), *TRAIN_FLAGS])
    task = tasks.setup_task(convert_namespace_to_omegaconf(args).task)
    task.load_dataset("train")
    before = {t for t in threading.enumerate() if isinstance(t, BackgroundConsumer)}
    iterator = task.get_batch_iterator(task.dataset("train"), max_tokens=600, seed=1, epoch=1,
                                       data_buffer_size=10)
    next(iterator.next_epoch_itr(shuffle=True))
    assert {t for t in threading.enumerate() if isinstance(t, BackgroundConsumer)} == before
    task.get_batch_iterator(task.dataset("train"), max_tokens=600, seed=1, epoch=2, data_buffer_size=10)
    notices = [r.getMessage() for r in caplog.records if "--data-buffer-size" in r.getMessage()]
    assert len(notices) == 1 and notices[0].startswith("--data-buffer-size 10 (fairseq's default is 10) is ignored"), notices
