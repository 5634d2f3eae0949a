"""Does round-trip BLEU select the checkpoints that parallel BLEU would? (Lample et al. 2018,
"Unsupervised Machine Translation Using Monolingual Corpora Only", Sec. 4.4: unsupervised model
selection by BLEU(x_hat, x) of the round trip x -> y -> x_hat on held-out monolingual text.)

    python benchmarks/round_trip_selection.py RUN_DIR --data DATA_DIR \
        [--results-log benchmarks/results/round_trip_selection.jsonl]

For every ``RUN_DIR/checkpoint_*.pt`` (checkpoint_best/last excluded unless ``--include-best-last``):
* parallel validation BLEU both ways on ``DATA/valid.{src}-{tgt}.*`` against ``DATA/raw/valid.*``,
  and their mean;
* round-trip BLEU on the held-out monolingual sentences ``DATA/{lang}/valid.bin`` (written by
  ``smallcap-prepare --heldout-mono``) against ``DATA/raw/valid_mono.{lang}``, and their mean.
All decoding is batched greedy decoding (``fairseq_smallcap.backtranslation.greedy_decode``, the
decoder of online back-translation and of ``--eval-round-trip``), detokenized with sentencepiece;
sacreBLEU default tokenization. Prints the per-checkpoint figures and the Spearman rank
correlation of the two means over the checkpoints; ``--results-log`` appends one JSON line with
them, the command, git commit, machine and date.
"""
import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from curation_ablation import REPO, provenance, refuse  # (benchmarks/, beside this script)
from scoring import read_lines


def run_metadata():
    """curation_ablation's provenance (date, commit, machine, threads), and whether tracked files
    differed from that commit."""
    try:
        dirty = bool(subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        dirty = None
    return {**provenance(), "worktree_modified": dirty}


def translate(model, task, sentences, src, tgt, batch_size):
    """Greedy translations (token tensors ending with eos) of ``sentences`` (token tensors
    ending with eos, without a language token) from ``src`` into ``tgt``."""
    import torch
    from fairseq.data import data_utils

    from fairseq_smallcap.backtranslation import greedy_decode

    d = task.dictionary
    max_len = min(task.cfg.max_source_positions, model.max_decoder_positions()) - 1
    out = []
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    results = [None] * len(sentences)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        src_list = [torch.cat([torch.LongTensor([task.lang_idx[src]]), sentences[i]]) for i in rows]
        tokens = data_utils.collate_tokens(src_list, d.pad(), d.eos(), left_pad=task.cfg.left_pad_source)
        lengths = torch.LongTensor([len(s) for s in src_list])
        hyps = greedy_decode(model, tokens, lengths, bos=torch.full_like(lengths, task.lang_idx[tgt]),
                             eos=d.eos(), pad=d.pad(), max_len_a=task.cfg.bt_max_len_a,
                             max_len_b=task.cfg.bt_max_len_b, max_len=max_len,
                             banned_tokens=task.never_generated)
        for i, h in zip(rows, hyps):
            results[i] = h
    out.extend(results)
    return out


def detok(task, tokens):
    return task.dictionary.string(tokens, "sentencepiece", unk_string="UNKNOWNTOKENINHYP")


def evaluate(checkpoint, data, max_lines, batch_size):
    import sacrebleu
    import torch
    from fairseq import checkpoint_utils
    from fairseq.data import data_utils

    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(data)})
    model = models[0].eval()
    d = task.dictionary
    src, tgt = task.langs[0], task.langs[1]
    load = lambda prefix: data_utils.load_indexed_dataset(str(prefix), d, "mmap")  # noqa: E731
    result = {"checkpoint": checkpoint.name, "num_updates": None}
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    result["num_updates"] = state.get("optimizer_history", [{}])[-1].get("num_updates")
    with torch.no_grad():
        for a, b in ((src, tgt), (tgt, src)):
            ds = load(data / f"valid.{src}-{tgt}.{a}")
            n = len(ds) if max_lines is None else min(max_lines, len(ds))
            hyps = [detok(task, h) for h in translate(model, task, [ds[i] for i in range(n)], a, b, batch_size)]
            refs = read_lines(data / "raw" / f"valid.{b}")[:n]
            result[f"bleu_{a}_{b}"] = round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
        for a, b in ((src, tgt), (tgt, src)):
            ds = load(data / a / "valid")
            if ds is None:
                refuse(f"--data {data}: no held-out monolingual data {data / a / 'valid'}.bin: prepare with --heldout-mono")
            n = len(ds) if max_lines is None else min(max_lines, len(ds))
            y = translate(model, task, [ds[i] for i in range(n)], a, b, batch_size)
            x_hat = translate(model, task, y, b, a, batch_size)
            refs = read_lines(data / "raw" / f"valid_mono.{a}")[:n]
            result[f"round_trip_bleu_{a}"] = round(
                sacrebleu.corpus_bleu([detok(task, t) for t in x_hat], [refs]).score, 2)
    result["bleu"] = round((result[f"bleu_{src}_{tgt}"] + result[f"bleu_{tgt}_{src}"]) / 2, 2)
    result["round_trip_bleu"] = round((result[f"round_trip_bleu_{src}"] + result[f"round_trip_bleu_{tgt}"]) / 2, 2)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="directory with checkpoint_*.pt")
    parser.add_argument("--data", type=Path, required=True, help="prepared data directory (--heldout-mono)")
    parser.add_argument("--max-lines", type=int, default=None,
                        help="score only the first N sentences of each set (default: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--include-best-last", action="store_true",
                        help="also score checkpoint_best.pt and checkpoint_last.pt")
    parser.add_argument("--results-log", type=Path, default=None, help="append one JSON line here")
    args = parser.parse_args(argv)

    def key(path):
        m = re.search(r"(\d+)(?:_(\d+))?\.pt$", path.name)
        return (int(m.group(1)), int(m.group(2) or 0)) if m else (1 << 60, 0)

    ckpts = sorted((p for p in args.run_dir.glob("checkpoint*.pt")
                    if args.include_best_last or p.name not in ("checkpoint_best.pt", "checkpoint_last.pt")),
                   key=key)
    if len(ckpts) < 2:
        parser.error(f"{args.run_dir}: {len(ckpts)} checkpoint(s) to rank, at least 2 needed"
                     + ("" if args.include_best_last else
                        " (checkpoint_best.pt and checkpoint_last.pt count with --include-best-last)"))
    sys.path.insert(0, str(REPO))
    from fairseq import utils
    utils.import_user_module(argparse.Namespace(user_dir=str(REPO / "fairseq_smallcap")))

    started = time.time()
    rows = []
    for ckpt in ckpts:
        row = evaluate(ckpt, args.data, args.max_lines, args.batch_size)
        rows.append(row)
        print(json.dumps(row), flush=True)
    from scipy.stats import spearmanr

    rho, p = spearmanr([r["bleu"] for r in rows], [r["round_trip_bleu"] for r in rows])
    rho = None if rho != rho else round(float(rho), 4)  # nan (constant input) -> None
    p = None if p != p else float(f"{float(p):.2g}")  # two significant digits (a small p is not 0)
    best_parallel = max(rows, key=lambda r: r["bleu"])["checkpoint"]
    best_round_trip = max(rows, key=lambda r: r["round_trip_bleu"])["checkpoint"]
    record = {
        "benchmark": "round_trip_selection", "run_dir": str(args.run_dir), "data": str(args.data),
        "spearman_rho": rho, "spearman_p": p, "n_checkpoints": len(rows),
        "selected_by_parallel_bleu": best_parallel, "selected_by_round_trip_bleu": best_round_trip,
        "checkpoints": rows, "max_lines": args.max_lines,
        "command": " ".join([sys.executable, *sys.argv]), "wall_s": round(time.time() - started, 1),
        **run_metadata(),
    }
    print(f"{'checkpoint':<28} {'updates':>8} {'BLEU(par)':>10} {'RT-BLEU':>8}")
    for r in rows:
        print(f"{r['checkpoint']:<28} {str(r['num_updates']):>8} {r['bleu']:>10.2f} {r['round_trip_bleu']:>8.2f}")
    print(f"Spearman rho(parallel BLEU, round-trip BLEU) = {rho} (p = {p}) over {len(rows)} checkpoints; "
          f"selected: parallel {best_parallel}, round trip {best_round_trip}")
    if args.results_log:
        args.results_log.parent.mkdir(parents=True, exist_ok=True)
        with open(args.results_log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    return record


if __name__ == "__main__":
    main()
