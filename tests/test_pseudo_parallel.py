"""smallcap-back-parallel and smallcap-seqkd: one pseudo-parallel writer behind both."""
import json

import pytest
from fairseq.data import Dictionary, data_utils

from fairseq_smallcap import back_parallel, pseudo_parallel
from fairseq_smallcap.distillation import sequence_kd


def spy(monkeypatch, owner, name, calls):
    """Record every call of ``owner.name`` in ``calls`` as (name, args, result)."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((name, args, result))
        return result

    monkeypatch.setattr(owner, name, wrapper)


@pytest.mark.parametrize("tool", ["back-parallel", "seqkd"])
def test_both_tools_write_through_the_shared_writer(tiny_data, trained_checkpoint, tmp_path, monkeypatch,
                                                   capsys, tool):
    checkpoint, _ = trained_checkpoint
    calls = []
    spy(monkeypatch, pseudo_parallel, "load_checkpoint", calls)
    spy(monkeypatch, pseudo_parallel.Decoder, "__init__", calls)
    spy(monkeypatch, pseudo_parallel.PseudoParallelWriter, "write_pairs", calls)
    spy(monkeypatch, pseudo_parallel.PseudoParallelWriter, "finish", calls)
    dest = tmp_path / "out"
    argv = [str(tiny_data), "--path", str(checkpoint), "--dest", str(dest), "--max-sentences", "12", "--cpu"]
    if tool == "back-parallel":
        assert back_parallel.cli_main([*argv, "--keep", "0.5"]) == 0
    else:
        assert sequence_kd.cli_main([*argv, "--beam", "2", "--max-len-a", "0", "--max-len-b", "8"]) == 0
    stdout = capsys.readouterr().out

    assert [name for name, _, _ in calls] == ["load_checkpoint", "__init__", "write_pairs", "write_pairs", "finish"]
    search = calls[1][1][4]  # Decoder(self, args, task, models, search)
    assert search == ("greedy" if tool == "back-parallel" else "beam")
    written = {f"{args[1]}-{args[2]}": (args[3], counts) for name, args, counts in calls if name == "write_pairs"}
    summary = json.loads((dest / "summary.json").read_text())
    assert set(written) == set(summary["directions"]) == {"en-fr", "fr-en"}
    dictionary = Dictionary.load(str(dest / "dict.txt"))
    for direction, counts in summary["directions"].items():
        pairs, decisions = written[direction]
        if tool == "back-parallel":
            n, rejected = counts["pairs"], counts[back_parallel.BELOW] + counts[back_parallel.ABOVE]
            assert counts["kept"] == 6  # --keep 0.5 of 12
            assert f"{direction}: {counts['kept']} kept + {rejected} rejected = {n} pairs" in stdout
        else:
            n, rejected = counts["input"], counts["rejected"]
            assert rejected == sum(counts["reasons"].values())
            assert f"{direction}: {counts['kept']} kept + {rejected} rejected = {n} sentences" in stdout
        assert n == len(pairs) == sum(decisions.values()) == 12
        assert counts["kept"] + rejected == n and decisions[pseudo_parallel.KEPT] == counts["kept"]
        for lang in direction.split("-"):
            binarized = data_utils.load_indexed_dataset(str(dest / f"train.{direction}.{lang}"), dictionary)
            assert len(binarized) == counts["kept"]
    assert not list(dest.rglob("*.partial"))
