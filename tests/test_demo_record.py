"""benchmarks/demo_record.py: the ledger record of a finished make demo run, through its CLI, on
hand-made hypotheses whose scores are known: copied references (BLEU 100, all distinct) and a
collapsed direction (one caption for every input)."""
import json
import os
import shutil
import sys
from pathlib import Path

from conftest import run

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPT = BENCHMARKS / "demo_record.py"
EN = ["a man rides a red bike .", "two dogs play in the snow .", "a woman is reading a book .",
      "children run on the beach ."]
FR = ["un homme fait du vélo rouge .", "deux chiens jouent dans la neige .", "une femme lit un livre .",
      "des enfants courent sur la plage ."]


def demo_dir(tmp_path, en_fr, fr_en):
    work = tmp_path / "demo"
    raw = work / "data" / "raw"
    raw.mkdir(parents=True)
    for name, lines in {"data/raw/test.en": EN, "data/raw/test.fr": FR, "test.en-fr.hyp": en_fr,
                        "test.fr-en.hyp": fr_en}.items():
        (work / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return work


def record(work, log, *flags, check=True):
    return run([sys.executable, SCRIPT, "--work", work, "--minutes", "14", "--wall-s", "1000.4",
                "--command", "make demo", "--results-log", log, *flags], check=check)


def test_record_scores_both_directions_and_the_distinct_target(tmp_path, trained_checkpoint):
    collapsed = ["a man in a blue shirt ."] * 4
    work = demo_dir(tmp_path, FR, collapsed)
    checkpoint, _ = trained_checkpoint
    (work / "bt").mkdir()
    shutil.copy(checkpoint, work / "bt" / "checkpoint_last.pt")
    log = tmp_path / "results" / "demo.jsonl"
    result = record(work, log, "--recipe", "test-recipe")
    assert "distinct >= 95% both ways: not met" in result.stdout
    (r,) = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    en_fr, fr_en = r["figures"]["en-fr"], r["figures"]["fr-en"]
    assert (en_fr["bleu"], en_fr["chrf"], en_fr["distinct"]) == (100.0, 100.0, 1.0)
    assert fr_en["distinct"] == 0.25 and fr_en["bleu"] < 10
    # copied: the share of hypothesis words found in their own source; by hand, only "." is
    # shared: 4 of the 27 words of the French hypotheses, 1 of the 7 of each collapsed caption
    assert en_fr["copied"] == round(4 / 27, 4) and fr_en["copied"] == round(1 / 7, 4)
    assert r["distinct_target_met"] is False and r["wall_s"] == 1000.4 and r["resumed"] is False
    assert r["mass_updates"] is None and isinstance(r["finetune_updates"], int) and r["finetune_updates"] > 0
    assert r["command"] == "make demo" and r["commit"] and r["machine"] and r["recipe"] == "test-recipe"
    assert (r["seed"], r["beam"], r["decoded_only"], r["checkpoint_sha1"]) == (1, 4, False, None)  # no checkpoint_best.pt
    assert en_fr["bleu_signature"].startswith("nrefs:1|") and "chrf_signature" in en_fr
    # the examples demo.sh prints: the first three test sentences of each direction, in order
    assert r["examples"] == {"en-fr": [[EN[i], FR[i], FR[i]] for i in range(3)],
                             "fr-en": [[FR[i], collapsed[i], EN[i]] for i in range(3)]}

    record(demo_dir(tmp_path / "again", FR, FR), log, "--resumed")
    second = json.loads(log.read_text(encoding="utf-8").splitlines()[1])
    assert second["distinct_target_met"] is True and second["resumed"] is True and "recipe" not in second

    # benchmarks/README.md's section, generated from this ledger by report.py
    out = tmp_path / "BENCHMARKS.md"
    run([sys.executable, BENCHMARKS / "report.py", "--results-dir", log.parent, "--out", out,
         "--readme", shutil.copy(BENCHMARKS.parent / "README.md", tmp_path / "README.md")])
    rows = [line for line in out.read_text(encoding="utf-8").splitlines() if "| smallcap_very_small | 14.0 |" in line]
    updates = r["finetune_updates"]
    assert rows[0].startswith(f"| `test-recipe`, lr 0.001 | smallcap_very_small | 14.0 | 1 | 4 | None + {updates} (None) | 100.0 / 100.0 | "
                              f"100.0% / 14.8% | {fr_en['bleu']} / {fr_en['chrf']} | 25.0% / 14.3% | not met | "
                              "16.7 min |"), rows
    # a record without its recipe: made before demo.sh recorded it, when the demo ran mass-fixed+emb128
    assert rows[1].startswith("| `mass-fixed+emb128`, lr 0.001 | smallcap_very_small |") and "| met | 16.7 min (resumed) |" in rows[1]
    # the examples of the newest record (the second: FR translated to itself, EN to FR's sentences)
    lines = out.read_text(encoding="utf-8").splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Examples of smallcap_very_small, 14.0 minutes ("))
    assert lines[at + 4:at + 10] == [f"| en→fr | {EN[i]} | {FR[i]} | {FR[i]} |" for i in range(3)] + \
        [f"| fr→en | {FR[i]} | {FR[i]} | {EN[i]} |" for i in range(3)], lines[at:at + 10]
    # shown as written: a hypothesis's <unk> is not dropped as an HTML tag, nor does | split its cell
    record(demo_dir(tmp_path / "unk", ["un <unk> | a\\b ."] + FR[1:], FR), log)
    run([sys.executable, BENCHMARKS / "report.py", "--results-dir", log.parent, "--out", out,
         "--readme", tmp_path / "README.md"])
    assert f"| en→fr | {EN[0]} | un &lt;unk&gt; \\| a\\\\b . | {FR[0]} |" in out.read_text(encoding="utf-8")


def test_missing_hypotheses_give_one_line_and_status_2(tmp_path):
    work = demo_dir(tmp_path, FR, EN)
    (work / "test.fr-en.hyp").unlink()
    log = tmp_path / "demo.jsonl"
    result = record(work, log, check=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("demo_record.py: error: --work") and "test.fr-en.hyp" in lines[0]
    assert not log.exists()


def test_a_checkpoint_decoded_two_ways_pairs_by_its_hash(tmp_path, trained_checkpoint):
    """demo.sh re-run with --beam 1 on a finished demo decodes the same checkpoint again: the two
    records share checkpoint_sha1, and report.py's demo section gives the per-seed differences
    beam 1 minus beam 4 with their t interval, here on hand-made hypotheses of two "seeds"."""
    import torch

    from fairseq_smallcap import checkpoint_safety

    checkpoint_safety.install()
    checkpoint, _ = trained_checkpoint
    log = tmp_path / "results" / "demo.jsonl"
    collapsed, two_captions = ["a man in a blue shirt ."] * 4, ["a man in a blue shirt .", "a dog ."] * 2
    # fr→en distinct: seed 1 beam 4 25%, beam 1 100% (+75 points); seed 2 50% -> 100% (+50 points)
    for seed, beam4_fr_en in ((1, collapsed), (2, two_captions)):
        work = demo_dir(tmp_path / f"seed{seed}", FR, beam4_fr_en)
        (work / "bt").mkdir()
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state["extra_state"]["test_seed"] = seed  # two trainings: two different checkpoint files
        torch.save(state, work / "bt" / "checkpoint_best.pt")
        record(work, log, "--seed", str(seed))
        (work / "test.fr-en.hyp").write_text("\n".join(EN) + "\n", encoding="utf-8")
        record(work, log, "--seed", str(seed), "--beam", "1", "--resumed", "--decoded-only")
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [(r["seed"], r["beam"], r["decoded_only"]) for r in records] == [
        (1, 4, False), (1, 1, True), (2, 4, False), (2, 1, True)]
    hashes = [r["checkpoint_sha1"] for r in records]
    assert hashes[0] == hashes[1] != hashes[2] == hashes[3] and len(hashes[0]) == 12

    out = tmp_path / "BENCHMARKS.md"
    run([sys.executable, BENCHMARKS / "report.py", "--results-dir", log.parent, "--out", out,
         "--readme", shutil.copy(BENCHMARKS.parent / "README.md", tmp_path / "README.md")])
    text = out.read_text(encoding="utf-8")
    # (a wall-clock budget is a setting of one machine and thread count; conftest sets the threads)
    threads = os.environ["OMP_NUM_THREADS"]
    assert records[0]["omp_num_threads"] == threads
    machine = f"{records[0]['machine']}, OMP_NUM_THREADS={threads}"
    setting = f"`mass-fixed+emb128`, lr 0.001, smallcap_very_small, 14.0 minutes on {machine}"
    assert f"{setting}, beam 1 (greedy) minus beam 4, the same checkpoints" in text
    # fr→en distinct over the two seeds: beam 4 25% and 50%, mean 37.50, std 17.68; beam 1 100% twice
    beam4 = f"{setting}, beam 4, seeds 1, 2 (mean ± std): en→fr BLEU 100.00 ± 0.00, distinct 100.00 ± 0.00%; fr→en BLEU"
    assert beam4 in text and "distinct 37.50 ± 17.68%." in text
    assert text.index(beam4) < text.index(f"{setting}, beam 1, seeds 1, 2")
    (fr_en,) = [line for line in text.splitlines() if line.startswith("- fr→en: ")]
    # mean 62.5; half-width t(0.975, 1 dof) 12.706 x stdev(75, 50) 17.678 / sqrt 2 = 158.83
    assert "distinct (points) +62.50 [-96.33, +221.33] (2 seeds: +75.00, +50.00)" in fr_en, fr_en
    (en_fr,) = [line for line in text.splitlines() if line.startswith("- en→fr: ")]
    assert "bleu +0.00 [+0.00, +0.00]" in en_fr and "distinct (points) +0.00" in en_fr, en_fr
    assert "| 14.0 | 2 | 1 |" in text and "(decoding only)" in text

    # seed 1 trained again (another checkpoint, beam 4 only): seed 1's figures are now that
    # checkpoint's, so the pairing is left with seed 2; a run of other minutes is not mixed in
    work = demo_dir(tmp_path / "seed1-again", FR, two_captions)
    (work / "bt").mkdir()
    state["extra_state"]["test_seed"] = "1 again"
    torch.save(state, work / "bt" / "checkpoint_best.pt")
    record(work, log, "--seed", "1")
    longer = demo_dir(tmp_path / "longer", FR, collapsed)
    (longer / "bt").mkdir()
    state["extra_state"]["test_seed"] = "60 minutes"
    torch.save(state, longer / "bt" / "checkpoint_best.pt")
    record(longer, log, "--seed", "3", "--minutes", "60")
    # the learning rate is the decoded checkpoint's: another rate is another setting, however it was
    # given (--extra or demo.sh's --lr); other flags stay apart; a checkpoint trained at 0.001 stays
    # at 0.001 whatever demo.sh says now (a finished demo decoded again after the default changed)
    def trained(name, tag, lr):
        work = demo_dir(tmp_path / name, FR, two_captions)
        (work / "bt").mkdir()
        copy = {**state, "extra_state": {**state["extra_state"], "test_seed": tag},
                "cfg": {**state["cfg"], "optimization": {**state["cfg"]["optimization"], "lr": [lr]}}}
        torch.save(copy, work / "bt" / "checkpoint_best.pt")
        return work

    record(trained("s3", "3 at 0.002", 0.002), log, "--seed", "3", "--extra=--amp --lr 0.002")
    record(trained("s4", "4 at 0.002", 0.002), log, "--seed", "4", "--lr", "0.002", "--extra=--amp")
    unsaved = demo_dir(tmp_path / "s5", FR, two_captions)  # no checkpoint: the rate as given, --extra's last
    record(unsaved, log, "--seed", "5", "--lr", "0.002", "--extra=--lr 0.003 --amp")
    record(work, log, "--seed", "6", "--lr", "0.002", "--extra=--amp")  # (work: "1 again", trained at 0.001)
    # another --mass-share is another setting, written before --extra's flags; the default 0.3 is not written
    record(trained("s7", "7 with half MASS", 0.001), log, "--seed", "7", "--mass-share", "0.5", "--extra=--amp")
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [r["lr"] for r in records[-8:]] == [0.001, 0.001, 0.001, 0.002, 0.002, 0.003, 0.001, 0.001]
    assert [r["mass_share"] for r in records[-8:]] == [0.3] * 7 + [0.5]
    run([sys.executable, BENCHMARKS / "report.py", "--results-dir", log.parent, "--out", out,
         "--readme", tmp_path / "README.md"])
    text = out.read_text(encoding="utf-8")
    assert f"{setting}, beam 4, seeds 1, 2 (mean ± std): " in text and "distinct 50.00 ± 0.00%." in text
    (fr_en,) = [line for line in text.splitlines() if line.startswith("- fr→en: ")]
    assert "distinct (points) +50.00 (seed 2 only: no interval)" in fr_en, fr_en
    assert "60.0 minutes on" not in text and "seeds 1, 2, 3" not in text
    assert "| `mass-fixed+emb128`, lr 0.001 + `--amp` | smallcap_very_small | 14.0 | 6 | 4 |" in text
    assert "| `mass-fixed+emb128`, lr 0.001 + `--mass-share 0.5 --amp` | smallcap_very_small | 14.0 | 7 | 4 |" in text
    assert f"`mass-fixed+emb128`, lr 0.002 + `--amp`, smallcap_very_small, 14.0 minutes on {machine}, beam 4, " \
           "seeds 3, 4 (mean ± std)" in text
    assert "| `mass-fixed+emb128`, lr 0.002 + `--amp` | smallcap_very_small | 14.0 | 4 | 4 |" in text
    assert "| `mass-fixed+emb128`, lr 0.003 + `--amp` | smallcap_very_small | 14.0 | 5 | 4 |" in text
    assert "minus lr 0.001" not in text  # (no seed trained at both rates in one setting)

    # seed 2 trained again at lr 0.002 (fr→en 25% distinct): paired with its lr 0.001 run (50%)
    again = trained("s2", "2 at 0.002", 0.002)
    (again / "test.fr-en.hyp").write_text("\n".join(collapsed) + "\n", encoding="utf-8")
    record(again, log, "--seed", "2", "--lr", "0.002")
    run([sys.executable, BENCHMARKS / "report.py", "--results-dir", log.parent, "--out", out,
         "--readme", tmp_path / "README.md"])
    lines = out.read_text(encoding="utf-8").splitlines()
    title = (f"`mass-fixed+emb128`, smallcap_very_small, 14.0 minutes on {machine}, beam 4: lr 0.002 minus lr 0.001, "
             "the same seeds (per-seed difference, 95% t interval):")
    at = lines.index(title)
    assert lines[at + 3].startswith("- fr→en: bleu ") and \
        "distinct (points) -25.00 (seed 2 only: no interval)" in lines[at + 3], lines[at:at + 4]

    # seed 2 of the lr 0.002 setting on another machine, and on this one with two threads (a 14-minute
    # budget buys each other updates): settings of their own, neither replacing seed 2's figures
    # above nor paired with them
    newest = log.read_text(encoding="utf-8").splitlines()[-1]
    more_threads = str(int(threads) + 1)
    for changes in ({"machine": "another machine"}, {"omp_num_threads": more_threads}):
        other = json.loads(newest)
        other.update(changes, checkpoint_sha1="0123456789ab")
        other["figures"]["fr-en"]["distinct"] = 1.0
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(other) + "\n")
    run([sys.executable, BENCHMARKS / "report.py", "--results-dir", log.parent, "--out", out,
         "--readme", tmp_path / "README.md"])
    again_lines = out.read_text(encoding="utf-8").splitlines()
    at = again_lines.index(title)
    assert again_lines[at:at + 4] == lines[lines.index(title):lines.index(title) + 4]
    assert not any(("on another machine" in line or f"OMP_NUM_THREADS={more_threads}" in line) and "minus" in line
                   for line in again_lines)
    assert sum(f"{records[0]['machine']}, OMP_NUM_THREADS={more_threads} |" in line for line in again_lines) == 1


def test_finetune_extra_is_a_setting_paired_with_demo_shs_own_flags(tmp_path, trained_checkpoint):
    """demo.sh's --finetune-extra reaches the record; report.py writes it as the setting's flags and
    gives it minus the same seeds with demo.sh's own flags (same rate, budget, machine): fr→en
    distinct 25% and 50% with demo.sh's flags, 100% with --finetune-extra: +75 and +50 points."""
    import torch

    from fairseq_smallcap import checkpoint_safety

    checkpoint_safety.install()
    checkpoint, _ = trained_checkpoint
    log = tmp_path / "results" / "demo.jsonl"
    collapsed, two_captions = ["a man in a blue shirt ."] * 4, ["a man in a blue shirt .", "a dog ."] * 2
    flags = "--lambda-dae 0:1,400:0"
    for name, fr_en, extra in (("plain", {1: collapsed, 2: two_captions}, []),
                               ("dae", {1: EN, 2: EN}, [f"--finetune-extra={flags}"])):
        for seed in (1, 2):
            work = demo_dir(tmp_path / f"{name}{seed}", FR, fr_en[seed])
            (work / "bt").mkdir()
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            state["extra_state"]["test_seed"] = f"{name} {seed}"
            torch.save(state, work / "bt" / "checkpoint_best.pt")
            record(work, log, "--seed", str(seed), *extra)
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [r.get("finetune_extra") for r in records] == [None, None, flags, flags]
    out = tmp_path / "BENCHMARKS.md"
    run([sys.executable, BENCHMARKS / "report.py", "--results-dir", log.parent, "--out", out,
         "--readme", shutil.copy(BENCHMARKS.parent / "README.md", tmp_path / "README.md")])
    lines = out.read_text(encoding="utf-8").splitlines()
    machine = f"{records[0]['machine']}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    assert sum(line.startswith(f'| `mass-fixed+emb128`, lr 0.001 + `--finetune-extra "{flags}"` | ') for line in lines) == 2
    title = (f"`mass-fixed+emb128`, lr 0.001, smallcap_very_small, 14.0 minutes on {machine}, beam 4: "
             f'`--finetune-extra "{flags}"` minus demo.sh\'s own flags, the same seeds (per-seed difference, 95% t interval):')
    at = lines.index(title)
    assert lines[at + 3].startswith("- fr→en: ") and \
        "distinct (points) +62.50 [-96.33, +221.33] (2 seeds: +75.00, +50.00)" in lines[at + 3], lines[at:at + 4]
    assert "bleu +0.00 [+0.00, +0.00]" in lines[at + 2], lines[at + 2]  # (en→fr: the references both ways)
    # the examples are the demo's own (its newest record: seed 2's two captions), not the newer
    # --finetune-extra records'; with only those in the ledger, theirs (the English references)
    for ledger_lines, setting, fr_en in ((records, "lr 0.001, seed 2", two_captions),
                                         (records[2:], f'lr 0.001 + `--finetune-extra "{flags}"`, seed 2', EN)):
        log.write_text("".join(json.dumps(r) + "\n" for r in ledger_lines), encoding="utf-8")
        run([sys.executable, BENCHMARKS / "report.py", "--results-dir", log.parent, "--out", out,
             "--readme", tmp_path / "README.md"])
        lines = out.read_text(encoding="utf-8").splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("Examples of smallcap_very_small, 14.0 minutes ("))
        assert f"(`mass-fixed+emb128`, {setting}, beam 4," in lines[at], lines[at]
        assert lines[at + 7:at + 10] == [f"| fr→en | {FR[i]} | {fr_en[i]} | {EN[i]} |" for i in range(3)], lines[at:at + 10]


def test_paired_with_records_the_bootstrap_against_the_other_demo(tmp_path, trained_checkpoint):
    """demo.sh --paired-with WORK2 (demo_record.py --paired-with): the record holds sacreBLEU's paired
    bootstrap of this demo's translations against WORK2's, whose scores are the two records' own
    figures, with WORK2's checkpoint hash and beam (from its generate log); report.py gives the
    largest p beside the learning-rate comparison of that seed, and only against the decoding
    WORK2's record holds (same checkpoint, same beam). Bad WORK2s: one line, status 2, no record."""
    import torch

    from fairseq_smallcap import checkpoint_safety

    checkpoint_safety.install()
    state = torch.load(trained_checkpoint[0], map_location="cpu", weights_only=True)
    log = tmp_path / "results" / "demo.jsonl"

    def trained(name, lr, fr_en):
        work = demo_dir(tmp_path / name, FR, fr_en)
        (work / "bt").mkdir()
        torch.save({**state, "extra_state": {**state["extra_state"], "test_seed": name},
                    "cfg": {**state["cfg"], "optimization": {**state["cfg"]["optimization"], "lr": [lr]}}},
                   work / "bt" / "checkpoint_best.pt")
        for pair in ("en-fr", "fr-en"):  # fairseq-generate's last log line names the beam
            (work / f"generate.test.{pair}.log").write_text("S-0\tx\nGenerate test with beam=4: BLEU4 = 1.00\n")
        return work

    # en→fr: one sentence apart; fr→en: a collapsed caption against the references
    base = trained("base", 0.001, ["a man in a blue shirt ."] * 4)
    better = trained("better", 0.002, EN)
    (better / "test.en-fr.hyp").write_text("\n".join(["un homme fait du vélo ."] + FR[1:]) + "\n", encoding="utf-8")
    record(base, log, "--seed", "2")
    result = record(better, log, "--seed", "2", "--paired-with", base)
    (b, r) = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    pbs = r["paired_bs_vs"]
    assert (pbs["work"], pbs["checkpoint_sha1"], pbs["beam"]) == (str(base), b["checkpoint_sha1"], 4)
    assert r["lr"] == 0.002 and b["lr"] == 0.001 and "paired_bs_vs" not in b
    for pair in ("en-fr", "fr-en"):
        for metric in ("bleu", "chrf"):  # each side's score is its own record's
            test = pbs[pair][metric]
            assert (test["baseline"], test["system"]) == (b["figures"][pair][metric], r["figures"][pair][metric])
            assert test["signature"]
    assert pbs["fr-en"]["bleu"]["system"] == 100.0 and pbs["fr-en"]["bleu"]["baseline"] < 10
    assert pbs["fr-en"]["bleu"]["p_value"] < 0.05 and pbs["fr-en"]["chrf"]["p_value"] < 0.05
    assert pbs["en-fr"]["bleu"]["system"] < 100 == pbs["en-fr"]["bleu"]["baseline"]
    assert f"fr-en against {base}: bleu {pbs['fr-en']['bleu']['baseline']} -> 100.0 (paired bootstrap p " in result.stdout

    out = tmp_path / "BENCHMARKS.md"
    readme = shutil.copy(BENCHMARKS.parent / "README.md", tmp_path / "README.md")

    def lr_lines():
        run([sys.executable, BENCHMARKS / "report.py", "--results-dir", log.parent, "--out", out, "--readme", readme])
        lines = out.read_text(encoding="utf-8").splitlines()
        at = next(i for i, line in enumerate(lines) if ": lr 0.002 minus lr 0.001, the same seeds" in line)
        return lines[at + 2:at + 4]

    def expect(test):
        """the two direction lines' endings: each its own direction's largest p of BLEU and chrF"""
        largest = {pair: max(test[pair][m]["p_value"] for m in ("bleu", "chrf")) for pair in ("en-fr", "fr-en")}
        assert largest["en-fr"] != largest["fr-en"]  # (so that a swap of directions shows)
        return [f"; paired bootstrap p ≤ {largest['en-fr']:.3f} (BLEU and chrF, seed 2)",
                f"; paired bootstrap p ≤ {largest['fr-en']:.3f} (BLEU and chrF, seed 2)"]

    en_fr, fr_en = lr_lines()
    assert en_fr.startswith("- en→fr: ") and fr_en.startswith("- fr→en: ")
    assert en_fr.endswith(expect(pbs)[0]) and fr_en.endswith(expect(pbs)[1]), (en_fr, fr_en)
    # WORK2 decoded again with beam 1 since its record: a bootstrap against that is not the one the
    # report pairs (its record's beam 4 decoding), so the lines go without one, and the record says so
    for pair in ("en-fr", "fr-en"):
        (base / f"generate.test.{pair}.log").write_text("Generate test with beam=1: BLEU4 = 1.00\n")
    result = record(better, log, "--seed", "2", "--paired-with", base, "--decoded-only")
    assert f"note: {base}'s translations are of beam 1 (its generate logs), these of beam 4" in result.stdout
    assert json.loads(log.read_text(encoding="utf-8").splitlines()[-1])["paired_bs_vs"]["beam"] == 1
    lines = lr_lines()
    assert len(lines) == 2 and lines[0].startswith("- en→fr: ") and all("paired bootstrap" not in x for x in lines)
    # the test held by the other side (the lr 0.001 demo re-run --paired-with the lr 0.002 one): the
    # same comparison, its p beside it
    record(base, log, "--seed", "2", "--paired-with", better, "--decoded-only")
    reverse = json.loads(log.read_text(encoding="utf-8").splitlines()[-1])["paired_bs_vs"]
    assert reverse["checkpoint_sha1"] == r["checkpoint_sha1"] and reverse["beam"] == 4
    en_fr, fr_en = lr_lines()
    assert en_fr.endswith(expect(reverse)[0]) and fr_en.endswith(expect(reverse)[1]), (en_fr, fr_en)

    # bad WORK2s, each refused in one line before anything is recorded
    other_refs = demo_dir(tmp_path / "other-refs", FR, EN)
    (other_refs / "data" / "raw" / "test.en").write_text("\n".join(reversed(EN)) + "\n", encoding="utf-8")
    unfinished = demo_dir(tmp_path / "unfinished", FR, EN)
    (unfinished / "test.fr-en.hyp").unlink()
    short = demo_dir(tmp_path / "short", FR, EN[:3])
    before = log.read_text(encoding="utf-8")
    for other, message in ((better, f"--paired-with {better}: that is --work itself"),
                           (other_refs, f"--paired-with {other_refs}: {other_refs}/data/raw/test.en differs from --work's"),
                           (unfinished, f"--paired-with {unfinished}: no hypotheses file {unfinished}/test.fr-en.hyp"),
                           (short, f"{short}/test.fr-en.hyp: 3 lines, but {short}/data/raw/test.en has 4")):
        result = record(better, log, "--seed", "2", "--paired-with", other, check=False)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith(f"demo_record.py: error: {message}"), lines[0]
    assert log.read_text(encoding="utf-8") == before
