#!/usr/bin/env python
"""One ledger record of a finished ``examples/multi30k/demo.sh`` run (``make demo``).

    python benchmarks/demo_record.py --work runs/demo --minutes 14 --wall-s 1140 \\
        --command "make demo" --results-log benchmarks/results/demo.jsonl

``demo.sh --results-log FILE`` calls it as its last step. It scores the demo's test_2016_flickr
hypotheses (``WORK/test.{en-fr,fr-en}.hyp``) against ``WORK/data/raw`` with
``benchmarks/scoring.py`` (sacreBLEU and chrF with signatures; the share of distinct hypotheses
and of copied words, the collapse and copying diagnostics of issue 20, whose target for the demo
is >= 95% distinct in both directions), reads the updates each stage reached from its
checkpoints, and appends one JSON line with the command, git commit, machine and date, the seed,
beam, learning rate, MASS share and --extra / --finetune-extra flags, the three examples demo.sh
prints per direction (issue 20 asks that they read as translations; the report shows them), and
``checkpoint_sha1``: a finished demo re-run with another ``--beam`` decodes the same checkpoint
again (``--decoded-only``), and ``report.py`` pairs such records by it. With ``--paired-with
OTHER`` (another demo's --work, e.g. the same seed at another learning rate) the record also holds
sacreBLEU's paired bootstrap (``sacrebleu --paired-bs``) of this demo's test translations against
OTHER's, each direction, BLEU and chrF, with OTHER's checkpoint hash and beam, by which
``report.py`` finds OTHER's record.
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

from curation_ablation import REPO, provenance  # (benchmarks/, beside this script)
from scoring import paired_bootstrap, read_lines, translation_scores

PAIRS = ("en-fr", "fr-en")
EXAMPLES = 3  # the test sentences demo.sh prints as examples: the first three of each direction
DISTINCT_TARGET = 0.95
RECIPE_LR = 0.001  # the measured recipe's learning rate, and demo.sh's before it was recorded
MASS_SHARE = 0.3  # demo.sh's default share of the budget for MASS, and its share before --mass-share


class DemoRecordError(Exception):
    """A demo directory this script cannot read; reported in one line."""


def updates_of(state):
    """The number of updates a fairseq checkpoint's state was saved at (None without a state)."""
    return None if state is None else (state.get("optimizer_history") or [{}])[-1].get("num_updates")


def lr_of(state):
    """The (first) learning rate a fairseq checkpoint's state was trained with (None without one)."""
    lr = None if state is None else ((state.get("cfg") or {}).get("optimization") or {}).get("lr")
    return float(lr[0]) if isinstance(lr, (list, tuple)) and lr else lr


def load(checkpoint: Path):
    """A fairseq checkpoint's state, read weights-only (None when it is missing)."""
    if not checkpoint.is_file():
        return None
    import torch

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from fairseq_smallcap import checkpoint_safety

    checkpoint_safety.install()
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DemoRecordError(f"cannot read {checkpoint}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return state


def checkpoint_sha1(checkpoint: Path):
    """The first 12 hex digits of the checkpoint file's SHA-1 (None when it is missing)."""
    if not checkpoint.is_file():
        return None
    with open(checkpoint, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()[:12]


def split_lr(extra: str):
    """(the learning rate an ``--extra`` string sets, its other words): the rate is its last ``--lr``
    (fairseq-train, like argparse, keeps the last), a float (a schedule of several rates, "0.001,0.002",
    as written), None when it sets none. Split as demo.sh's unquoted $EXTRA is."""
    words, lr, rest = iter((extra or "").split()), None, []
    for word in words:
        if word == "--lr":
            lr = next(words, lr)
        elif word.startswith("--lr="):
            lr = word[len("--lr="):]
        else:
            rest.append(word)
    try:
        return None if lr is None else float(lr), rest
    except ValueError:
        return lr, rest


def decodings_of(work: Path, flag: str):
    """Each direction's test translations with their references and sources, read from a finished
    demo's ``WORK`` (given as ``flag``): {pair: {"hypotheses", "references", "sources": lines}}."""
    raw = work / "data" / "raw"
    decodings = {}
    for pair in PAIRS:
        src, tgt = pair.split("-")
        paths = {"hypotheses": work / f"test.{pair}.hyp", "references": raw / f"test.{tgt}",
                 "sources": raw / f"test.{src}"}
        for what, path in paths.items():
            if not path.is_file():
                raise DemoRecordError(f"{flag} {work}: no {what} file {path} (has demo.sh finished?)")
        decodings[pair] = {what: read_lines(path) for what, path in paths.items()}
        hyps, refs = decodings[pair]["hypotheses"], decodings[pair]["references"]
        if len(hyps) != len(refs):
            raise DemoRecordError(f"{paths['hypotheses']}: {len(hyps)} lines, but {paths['references']} "
                                  f"has {len(refs)}")
    return decodings


def scores_of(decodings):
    """(figures, examples) of each direction of ``decodings_of``'s: its scores, and the first
    EXAMPLES test sentences as [source, hypothesis, reference], the examples demo.sh prints."""
    figures, examples = {}, {}
    for pair, d in decodings.items():
        hyps, refs, sources = d["hypotheses"], d["references"], d["sources"]
        figures[pair] = translation_scores(hyps, refs, sources)
        examples[pair] = [list(example) for example in zip(sources[:EXAMPLES], hyps[:EXAMPLES], refs[:EXAMPLES])]
    return figures, examples


def beam_of(work: Path, pair: str):
    """The beam size of the decoding that wrote ``WORK/test.PAIR.hyp``, from the last line of
    fairseq-generate's log beside it ("Generate test with beam=N: BLEU4 = ..."); None without it."""
    log = work / f"generate.test.{pair}.log"
    lines = read_lines(log) if log.is_file() else []
    last = lines[-1] if lines else ""
    beam = last.split("beam=", 1)[1].split(":", 1)[0] if last.startswith("Generate test with beam=") else ""
    return int(beam) if beam.isdigit() else None


def paired_with(work: Path, decodings, other: Path):
    """sacreBLEU's paired bootstrap of ``work``'s test translations (``decodings_of``'s; the system)
    against ``other``'s (the baseline), each direction, on the same references; with ``other``'s
    checkpoint hash and beam (None where its generate logs do not say one beam for both directions)."""
    if other.resolve() == work.resolve():
        raise DemoRecordError(f"--paired-with {other}: that is --work itself; give another demo's --work")
    theirs = decodings_of(other, "--paired-with")
    beams = {beam_of(other, pair) for pair in PAIRS}  # (one beam for both directions, or unknown)
    out = {"work": str(other), "checkpoint_sha1": checkpoint_sha1(other / "bt" / "checkpoint_best.pt"),
           "beam": beams.pop() if len(beams) == 1 else None}
    for pair in PAIRS:
        refs = decodings[pair]["references"]
        if theirs[pair]["references"] != refs:
            tgt = pair.split("-")[1]
            raise DemoRecordError(f"--paired-with {other}: {other / 'data' / 'raw' / f'test.{tgt}'} differs from "
                                  f"--work's {work / 'data' / 'raw' / f'test.{tgt}'}: not the same test set")
        out[pair] = paired_bootstrap(refs, theirs[pair]["hypotheses"], decodings[pair]["hypotheses"])
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="the demo's --work directory")
    parser.add_argument("--arch", default="smallcap_very_small", help="the demo's --arch")
    parser.add_argument("--recipe", default=None, help="the recipe the demo ran (benchmarks/README.md's names)")
    parser.add_argument("--minutes", type=float, required=True, help="the demo's --minutes (training budget)")
    parser.add_argument("--wall-s", type=float, required=True,
                        help="seconds the demo ran, all five steps (of this invocation, if it resumed)")
    parser.add_argument("--seed", type=int, default=1, help="the demo's --seed (training seed)")
    parser.add_argument("--extra", default="", help="the demo's --extra (fairseq-train flags on top of its recipe)")
    parser.add_argument("--finetune-extra", default="",
                        help="the demo's --finetune-extra (fairseq-train flags of its fine-tuning stage only)")
    parser.add_argument("--beam", type=int, default=4, help="the demo's --beam (beam size of the test translations)")
    parser.add_argument("--lr", type=float, default=RECIPE_LR,
                        help="the learning rate demo.sh gave both stages (an --lr in --extra overrides it)")
    parser.add_argument("--mass-share", type=float, default=MASS_SHARE,
                        help="the demo's --mass-share (the budget's share for MASS pretraining)")
    parser.add_argument("--resumed", action="store_true", help="the demo resumed an earlier, interrupted run")
    parser.add_argument("--decoded-only", action="store_true",
                        help="both training stages had finished before: this run only decoded the checkpoint again")
    parser.add_argument("--paired-with", type=Path, default=None,
                        help="another demo's --work (e.g. the same seed at another learning rate): record "
                             "sacreBLEU's paired bootstrap of this demo's test translations against its")
    parser.add_argument("--command", required=True, help="the command that ran the demo")
    parser.add_argument("--results-log", type=Path, required=True, help="append one JSON line here")
    args = parser.parse_args(argv)
    try:
        decodings = decodings_of(args.work, "--work")
        figures, examples = scores_of(decodings)
        paired = paired_with(args.work, decodings, args.paired_with) if args.paired_with else None
        states = {name: load(args.work / stage / f"checkpoint_{which}.pt")
                  for name, stage, which in (("mass_updates", "mass", "last"), ("finetune_updates", "bt", "last"),
                                             ("finetune_best_updates", "bt", "best"))}
    except DemoRecordError as e:
        print(f"demo_record.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    record = {
        "benchmark": "demo",
        "arch": args.arch,
        **({"recipe": args.recipe} if args.recipe else {}),
        **({"extra": args.extra} if args.extra else {}),
        **({"finetune_extra": args.finetune_extra} if args.finetune_extra else {}),
        "minutes": args.minutes,
        "mass_share": args.mass_share,
        "wall_s": round(args.wall_s, 1),
        "resumed": args.resumed,
        "decoded_only": args.decoded_only,
        "seed": args.seed,
        "beam": args.beam,
        # the learning rate the decoded checkpoint was trained with (without one: demo.sh's, or the
        # one --extra gave on top of it)
        "lr": next(lr for lr in (lr_of(states["finetune_best_updates"]), split_lr(args.extra)[0], args.lr)
                   if lr is not None),
        **{name: updates_of(state) for name, state in states.items()},  # finetune_best: checkpoint_best.pt's
        # which training run was decoded: records of one checkpoint decoded two ways pair by it
        "checkpoint_sha1": checkpoint_sha1(args.work / "bt" / "checkpoint_best.pt"),
        "figures": figures,
        # sacreBLEU's paired bootstrap against --paired-with's translations (it the baseline)
        **({"paired_bs_vs": paired} if paired else {}),
        "examples": examples,
        "distinct_target": DISTINCT_TARGET,
        "distinct_target_met": all(figures[p]["distinct"] >= DISTINCT_TARGET for p in PAIRS),
        **provenance(),
        "command": args.command,
    }
    args.results_log.parent.mkdir(parents=True, exist_ok=True)
    with open(args.results_log, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
    for pair in PAIRS:
        f = figures[pair]
        print(f"{pair}: BLEU {f['bleu']}, chrF {f['chrf']}, distinct {100 * f['distinct']:.1f}%, "
              f"copied {100 * f['copied']:.1f}%")
        if paired:
            tests = paired[pair]
            print(f"{pair} against {args.paired_with}: " + ", ".join(
                f"{metric} {tests[metric]['baseline']} -> {tests[metric]['system']} (paired bootstrap p "
                f"{tests[metric]['p_value']:.4f})" for metric in ("bleu", "chrf")))
    if paired and paired["beam"] != args.beam:
        print(f"note: {args.paired_with}'s translations are of beam {paired['beam']} (its generate logs), "
              f"these of beam {args.beam}: the report pairs records of one beam, so it will not show this test")
    print(f"distinct >= {100 * DISTINCT_TARGET:.0f}% both ways: "
          f"{'met' if record['distinct_target_met'] else 'not met'}; recorded in {args.results_log}")
    return record


if __name__ == "__main__":
    main()
