"""The benchmarks' scoring: diagnostics and paired statistics against hand-computed values, and
the paired bootstrap on systems whose order is known."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import curation_ablation  # noqa: E402
import scoring  # noqa: E402


def test_diagnostics_count_distinct_hypotheses_and_copied_words():
    sources = ["un chien court", "un chat dort", "une femme lit", "deux hommes"]
    hyps = ["A dog runs", "A dog runs", "A woman lit", "Deux men"]
    d = scoring.diagnostics(hyps, sources)
    assert d["distinct"] == 0.75  # 3 distinct of 4
    # words copied from their own source: "lit" (3rd) and "deux" (4th, case-folded): 2 of 11
    assert d["copied"] == round(2 / 11, 4)


def test_translation_scores_carry_both_metrics_and_signatures():
    refs = ["a dog runs in the park", "a cat sleeps on the sofa"]
    out = scoring.translation_scores(refs, refs, ["un chien", "un chat"])
    assert out["bleu"] == 100.0 and out["chrf"] == 100.0
    assert "nrefs:1" in out["bleu_signature"] and "tok:13a" in out["bleu_signature"]
    assert "nc:6" in out["chrf_signature"]
    with pytest.raises(ValueError, match="1 hypotheses, 2 references"):
        scoring.translation_scores(refs[:1], refs, refs)


def test_paired_differences_against_a_hand_computed_interval():
    baseline = {1: 3.0, 2: 5.0, 3: 4.0, 4: 9.0}
    system = {1: 4.0, 2: 7.0, 3: 7.0}
    p = scoring.paired_differences(baseline, system)
    assert p["seeds"] == [1, 2, 3] and p["differences"] == [1.0, 2.0, 3.0]
    # mean 2, sd 1, t(0.975, 2) = 4.3027: 2 ± 4.3027 / sqrt(3) = 2 ± 2.484
    assert p["mean"] == 2.0 and p["ci95"] == [-0.48, 4.48]
    assert p["baseline"] == {"n": 3, "mean": 4.0, "std": 1.0}
    assert scoring.paired_differences({1: 1.0}, {1: 2.5})["ci95"] is None
    assert "+2.00 [-0.48, +4.48] (3 seeds: +1.00, +2.00, +3.00)" == scoring.format_paired(p)


def test_paired_bootstrap_tells_a_better_system_from_the_same_one():
    refs = [f"the {w} dog runs in the park number {i}" for i, w in enumerate(["big", "small", "red"] * 20)]
    weak = [r.replace("runs in the park", "sleeps") for r in refs]
    better = [r if i % 2 else w for i, (r, w) in enumerate(zip(refs, weak))]
    out = scoring.paired_bootstrap(refs, weak, better, samples=200)
    assert out["bleu"]["system"] > out["bleu"]["baseline"] and out["bleu"]["p_value"] < 0.05
    assert out["chrf"]["system"] > out["chrf"]["baseline"] and "bs:200" in out["bleu"]["signature"]
    reverse = scoring.paired_bootstrap(refs, better, weak, samples=200)
    assert (reverse["bleu"]["baseline"], reverse["bleu"]["system"]) == (out["bleu"]["system"], out["bleu"]["baseline"])


def test_report_prints_paired_differences(capsys, tmp_path):
    rows = [{"arch": "a", "seed": s, "system": system, "en-fr": v, "fr-en": v, "mean": v,
             "finetune_wall_s": 60.0, "valid_bleu": []}
            for s, base, other in ((1, 3.0, 4.0), (2, 5.0, 7.0), (3, 4.0, 7.0))
            for system, v in (("baseline", base), ("all", other))]
    curation_ablation.report(rows, tmp_path)
    assert "| a | all | +2.00 [-0.48, +4.48] (3 seeds: +1.00, +2.00, +3.00) |" in capsys.readouterr().out
