"""examples/multi30k/demo.sh's own checks, which run before any training: bad --seed / --beam, and
a --work directory trained with other settings, each one line on stderr and exit status 2."""
from pathlib import Path

from conftest import BIN, run

DEMO = Path(__file__).resolve().parent.parent / "examples" / "multi30k" / "demo.sh"
ENV = {"PATH": f"{BIN}:/usr/bin:/bin"}


def demo(*args):
    return run(["bash", DEMO, *args], check=False, env=ENV)


def one_line_error(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, (result.returncode, result.stderr)
    return lines[0]


def test_bad_seed_and_beam(tmp_path):
    assert one_line_error(demo("--work", tmp_path / "w", "--seed", "x")) == "demo.sh: --seed x: expected a whole number"
    assert one_line_error(demo("--work", tmp_path / "w", "--beam", "0")) == \
        "demo.sh: --beam 0: expected a whole number above 0"
    assert not (tmp_path / "w").exists()


def test_a_work_directory_of_other_settings_is_refused(tmp_path):
    work = tmp_path / "demo"
    work.mkdir()
    (work / "settings").write_text("arch=smallcap_very_small minutes=14 seed=1 extra=\n")
    line = one_line_error(demo("--work", work, "--seed", "2", "--raw-dir", tmp_path / "no-such-dir"))
    assert line == (f"demo.sh: --work {work} was trained with 'arch=smallcap_very_small minutes=14 seed=1 extra=', "
                    "not 'arch=smallcap_very_small minutes=14 seed=2 extra=': give those or another --work")
    assert (work / "settings").read_text() == "arch=smallcap_very_small minutes=14 seed=1 extra=\n"
    # the same settings pass the check and go on to the first step (which fails here on the raw dir)
    result = demo("--work", work, "--seed", "1", "--raw-dir", tmp_path / "no-such-dir")
    assert "1/5 prepare Multi30k" in result.stdout and "was trained with" not in result.stderr
