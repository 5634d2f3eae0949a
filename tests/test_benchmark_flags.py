"""Bad flags to the benchmark scripts bt_speed.py and round_trip_selection.py: one line naming the
flag or directory, exit status 2 (argparse's own), before anything trains or loads a checkpoint."""
import subprocess
import sys
from pathlib import Path

from conftest import error_lines

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def refused(script, *args, cwd):
    """The one error line of ``script`` run with ``args`` (after argparse's usage lines), or fail."""
    result = subprocess.run([sys.executable, BENCHMARKS / script, *map(str, args)],
                            capture_output=True, text=True, cwd=cwd)
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and lines[0].startswith("usage: "), result.stderr
    assert all(line.startswith(" ") for line in lines[1:-1]), result.stderr  # (usage continued)
    return lines[-1]


def test_bt_speed_skip_that_leaves_no_update_is_refused(tmp_path):
    (tmp_path / "dict.txt").write_text("a 1\n")
    assert refused("bt_speed.py", "--data", tmp_path, "--updates", 5, "--skip", 5, cwd=tmp_path) == (
        "bt_speed.py: error: --skip 5: leaves no update of --updates 5 to measure")


def test_round_trip_selection_needs_two_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("checkpoint_1_200.pt", "checkpoint_best.pt", "checkpoint_last.pt"):
        (run_dir / name).write_bytes(b"")  # (never read: the count is checked first)
    assert refused("round_trip_selection.py", run_dir, "--data", tmp_path, cwd=tmp_path) == (
        f"round_trip_selection.py: error: {run_dir}: 1 checkpoint(s) to rank, at least 2 needed "
        "(checkpoint_best.pt and checkpoint_last.pt count with --include-best-last)")
