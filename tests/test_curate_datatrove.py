"""smallcap-curate as a datatrove pipeline (issue 21): several tasks give the single task's
outputs, deduplication is exact across tasks, the cluster executors are datatrove's and fail
as one line without their dependency."""
import io
import json
import shutil
import importlib.util

import pytest

from conftest import run, tool
from test_curate import EXPECTED, LINES, read_rejects

FILLER = [f"A {colour} dog runs across the {place} with a {thing}."
          for colour in ("brown", "white", "black", "small", "large", "happy")
          for place in ("park", "beach", "field", "garden") for thing in ("ball", "stick", "toy")]
DUPLICATED = b"A young girl climbs the wooden stairs of a house."


@pytest.fixture
def long_corpus(tmp_path):
    """The crafted lines, clean fillers, and a line whose copy (other case) is near the end."""
    lines = [DUPLICATED] + LINES + [s.encode() for s in FILLER] + [DUPLICATED.upper()[:-1] + b"."]
    path = tmp_path / "long.en"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, lines


def curate(corpus, tmp_path, name, *extra, check=True):
    out, rej = tmp_path / f"{name}.en", tmp_path / f"{name}.rejects.tsv"
    result = run([tool("smallcap-curate"), "--lang", "en", "--input", corpus, "--output", out, "--rejects", rej,
                  *extra], check=check)
    summary = json.loads((tmp_path / f"{name}.en.summary.json").read_text()) if result.returncode == 0 else None
    return result, out, rej, summary


def test_four_tasks_give_the_single_task_outputs_and_deduplicate_across_tasks(long_corpus, tmp_path):
    corpus, lines = long_corpus
    _, one, rej_one, s_one = curate(corpus, tmp_path, "one", "--tasks", "1")
    _, four, rej_four, s_four = curate(corpus, tmp_path, "four", "--tasks", "4", "--workers", "2")
    tasks = s_four["engine"]["tasks"]
    assert len(tasks) == 4 and all(t["lines"] > 0 for t in tasks)
    assert sum(t["lines"] for t in tasks) == len(lines)
    # the invariants
    assert s_four["kept"] + s_four["rejected_total"] == s_four["lines_in_shard"] == len(lines)
    rejects = read_rejects(rej_four)
    assert len(rejects) == s_four["rejected_total"] and len(four.read_text().splitlines()) == s_four["kept"]
    assert all(row[1] in s_four["rejected"] and row[2] for row in rejects.values())  # a rule and a detail each
    assert {n - 1: r[1] for n, r in rejects.items() if 2 <= n <= len(LINES) + 1} == EXPECTED
    # the same outputs, in the same order, as one task (and as the built-in engine)
    assert four.read_bytes() == one.read_bytes() and rej_four.read_bytes() == rej_one.read_bytes()
    assert {k: s_four[k] for k in ("kept", "rejected", "lines_read")} == {k: s_one[k] for k in ("kept", "rejected", "lines_read")}
    _, builtin, rej_builtin, _ = curate(corpus, tmp_path, "builtin", "--executor", "builtin")
    assert four.read_bytes() == builtin.read_bytes() and rej_four.read_bytes() == rej_builtin.read_bytes()
    # the two copies of DUPLICATED are read by different tasks; the first is kept, once
    task_of = lambda n: next(i for i, t in enumerate(tasks) if t["first_line"] <= n < t["first_line"] + t["lines"])  # noqa: E731
    last = len(lines)
    assert task_of(1) != task_of(last)
    assert four.read_text().splitlines().count(DUPLICATED.decode()) == 1
    assert rejects[last][1:3] == ["duplicate", "of line 1"]


def test_cluster_executors_are_datatrove_s(tmp_path):
    from argparse import Namespace

    from datatrove.executor.ray import RayPipelineExecutor
    from datatrove.executor.slurm import SlurmPipelineExecutor

    from fairseq_smallcap.curation import datatrove_pipeline as dp

    args = Namespace(lang="en", input=str(tmp_path / "in.en"), output=str(tmp_path / "out.en"),
                     rejects=str(tmp_path / "rej.tsv"), num_shards=1, shard_id=0, log_interval=0,
                     executor="slurm", keep_work=False)
    work = dp.WorkDir(tmp_path / "work")
    stages = dp.build_stages(args, ["url", "duplicate"], [], work, 8, str(tmp_path / "s.json"), 0.0)
    assert [(name, tasks) for name, _, tasks in stages] == [
        ("count", 8), ("rules", 8), ("find", 8), ("dedup", 8), ("merge", 1)]
    for kind, cls in (("slurm", SlurmPipelineExecutor), ("ray", RayPipelineExecutor)):
        executor, names = dp.build_executor(kind, stages, work, None, {"partition": "cpu"}), []
        while executor is not None:
            assert isinstance(executor, cls)
            names.append(executor.world_size)
            executor = executor.depends
        assert names == [1, 8, 8, 8, 8]


@pytest.mark.parametrize("executor,missing,message", [
    ("slurm", shutil.which("sbatch") is None, "--executor slurm: sbatch not found on PATH"),
    ("ray", importlib.util.find_spec("ray") is None, "--executor ray: the ray package is not installed"),
])
def test_a_cluster_executor_without_its_dependency_is_one_line(long_corpus, tmp_path, executor, missing, message):
    if not missing:
        pytest.skip(f"{executor}'s dependency is installed here")
    result, out, _, _ = curate(long_corpus[0], tmp_path, "c", "--executor", executor, "--tasks", "4",
                               "--slurm-partition", "cpu", check=False)
    assert result.returncode == 2 and f"smallcap-curate: error: {message}" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_byte_ranges_partition_the_lines():
    from fairseq_smallcap.curation.datatrove_pipeline import byte_range, iter_range, lines_starting_in

    for data in (b"", b"\n", b"a", b"a\n", b"\n\n\nx", b"one\r\ntwo\n\nthree\nfour", b"x" * 50 + b"\ny\n"):
        for world_size in range(1, 8):
            f, got = io.BytesIO(data), []
            for rank in range(world_size):
                start, end = byte_range(len(data), rank, world_size)
                part = list(iter_range(f, start, end))
                assert lines_starting_in(f, start, end) == len(part)
                got += part
            assert got == io.BytesIO(data).readlines(), (data, world_size)
