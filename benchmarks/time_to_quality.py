"""Time to quality against the anchor: fairseq's own ``online_backtranslation`` task (DAE + online
BT from scratch) and our recipe ``mass-fixed+emb128`` (skip-gram embeddings, MASS pretraining,
then DAE + online BT), each trained for a wall-clock budget (by default the same) on the same
machine and data, every saved checkpoint scored the same way offline.

    python benchmarks/time_to_quality.py --work runs/ttq --minutes 86 --checkpoint-minutes 5 \\
        --results-log benchmarks/results/time_to_quality.jsonl --plot runs/ttq/time_to_quality.png
    # the plot again from the ledger's newest record
    python benchmarks/time_to_quality.py --plot-only benchmarks/results/time_to_quality.jsonl \\
        --plot docs/time_to_quality.png

Data: ``smallcap-prepare --multi30k --vocab-size 8000`` into ``WORK/data`` (or ``--data DIR``, an
existing smallcap-prepare directory). Systems (``--extra`` flags are added to every fairseq-train
command of both; ``--arch`` and ``--max-tokens`` are shared):

* ``anchor``: fairseq 0.12's ``--task online_backtranslation`` with the flags of
  ``benchmarks/bt_speed.py`` (``--mono-langs en,fr``, ``--lambda-dae 1 --lambda-bt 1``, adam, lr
  5e-4, inverse_sqrt with 4000 warm-up updates), trained until the budget;
* ``ours``: ``smallcap-embeddings DATA --dim D --threads 1``, then MASS pretraining until 30% of the
  training time left after the embeddings, then DAE + online BT from the MASS checkpoint until the
  budget (the default split of ``examples/multi30k/demo.sh``); the fairseq-train flags are
  ``curation_ablation.common_flags`` plus the stage flags of ``curation_ablation.py``, with
  ``--init-embeddings``, and ``examples/multi30k/demo.sh``'s fine-tuning warm-up for the budget (50
  updates under 30 minutes, else 200) and learning rate of both stages (0.002). ``--ours-minutes``
  gives ours its own budget (its schedule scaled to it: does ours given M minutes reach what the
  anchor reaches in 86?), ``--ours-seeds`` several runs of ours, one after another, each on its own
  clock (``WORK/ours-sN``), and ``--ours-checkpoint-minutes`` its own checkpoint interval. With ``--share-all-embeddings`` in ``--extra`` ours is the recipe
  ``mass-fixed+emb128+shared``.

What "minutes" means: wall-clock seconds since the system's training began, measured by this
script around its subprocesses (their start-up included): for ``ours`` the embeddings, the MASS
stage and the fine-tuning stage are on one clock, one after the other; data preparation is shared
and on no clock; scoring is offline and on no clock. A checkpoint's minute is its file's
modification time on the clock of the fairseq-train process that wrote it. Each stage gets
``--stop-time-hours`` such that fairseq stops when its own training time reaches the stage's end
on the system clock; fairseq does not count its own start-up (model building, data loading), so a
stage ends some seconds after its nominal end: the recorded minutes are the real ones. In-training
validation is off for both systems (``--disable-validation``: their budgets go to training only).

Checkpoints: fairseq saves every ``--save-every-updates`` updates (ours: every
``--ours-save-every-updates``; ``--save-interval-updates``, ``--keep-interval-updates -1``); while it
trains, this script keeps the first checkpoint at or after every ``--checkpoint-minutes`` mark of
the system clock (moved to ``WORK/SYSTEM/kept/``) and deletes the others, and it keeps each
stage's last checkpoint (``checkpoint_last.pt`` when it stopped).
Interrupted and run again with the same ``--work``, a stage resumes from its ``checkpoint_last.pt``
and its clock from that checkpoint's minute (the work lost after it is not counted); a finished
system has ``WORK/SYSTEM/done.json`` and is not trained again. ``--side-by-side`` trains in two
lanes at the same time, each with half of ``--threads`` (OMP_NUM_THREADS) instead of all of them:
the anchor in one; ours' runs, then the validation scores of every checkpoint kept so far (while the
anchor still trains), in the other (keep the runs of ours within the anchor's budget, so that each
trains beside it). A resumed system must have the same settings (budget, seed, arch, ``--extra``,
checkpoint interval, threads), else the script stops.

Scoring, the same for both systems: Multi30k val both ways (``DATA/valid.en-fr.*``, references
``DATA/raw/valid.*``), **greedy** decoding with ``fairseq_smallcap.backtranslation.greedy_decode``
(the source is ``__src__`` + sentence + ``</s>``, the decoder starts with ``__tgt__``; ``<mask>``,
``<s>``, padding and language tokens are never generated; at most 1.3 x source + 5 tokens),
sentencepiece pieces decoded with ``DATA/spm.model``, sacreBLEU and chrF (``scoring.py``). One
cache file per checkpoint (``WORK/SYSTEM/scores/``). The anchor cannot be scored with fairseq's
own tools: its ``--eval-bleu`` validation crashes on fairseq 0.12 (``json.loads(None)`` without
``--eval-bleu-detok-args``; with it, the BLEU generator is built before the language tokens are
added to the dictionary: ``shape '[24, -1, 403]' is invalid``), and ``fairseq-generate`` would
start the decoder with ``</s>`` instead of the target-language token.

Report: validation BLEU (mean of both directions) against minutes for both systems; the anchor's
level (its last checkpoint's BLEU); the minutes each system needs to reach it (its first
checkpoint at or above it) and their ratio (anchor minutes / our minutes: how many times faster
ours is; a bound when a system reaches the level at its first scored checkpoint; with several
seeds of ours the smallest ratio, each one, and their mean and std); test BLEU and chrF
on test_2016_flickr both ways, with signatures, of each system's last checkpoint and its best one
by validation BLEU. ``--results-log`` appends one JSON record per invocation; ``--plot`` draws the
curves.
"""
import argparse
import datetime
import json
import logging
import math
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import bt_speed  # (benchmarks/, beside this script)
import scoring
from curation_ablation import BIN, REPO, USER_DIR, common_flags, provenance, refuse
# (MASS_SHARE: demo.sh's default share, here of the training time left after the embeddings)
from demo_record import MASS_SHARE, RECIPE_LR, split_lr

RECIPE = "mass-fixed+emb128"
DIRECTIONS = (("en", "fr"), ("fr", "en"))
_print_lock = threading.Lock()


def say(message: str):
    with _print_lock:
        print(message, flush=True)


def atomic_write_json(path: Path, obj):
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(obj, indent=1, ensure_ascii=False))
    os.replace(partial, path)


def drop_flag(command, flag, nargs):
    """``command`` without ``flag`` and the ``nargs`` values after it."""
    out, skip = [], 0
    for item in command:
        if skip:
            skip -= 1
        elif item == flag:
            skip = nargs
        else:
            out.append(item)
    return out


# ---------------------------------------------------------------------------------------------
# fairseq-train commands


def anchor_command(args, save_dir: Path):
    """bt_speed.py's ``online_backtranslation`` command, saving checkpoints instead of
    measuring a fixed number of updates."""
    spec = argparse.Namespace(data=str(args.data), arch=args.arch, max_tokens=args.max_tokens, updates=0,
                              num_workers=1, init_checkpoint=None)
    command = bt_speed.train_command("fairseq online_backtranslation", spec)
    for flag, nargs in (("--no-save", 0), ("--max-update", 1), ("--log-interval", 1)):
        command = drop_flag(command, flag, nargs)
    return [*command, "--log-interval", "25", *save_flags(args.save_every_updates, save_dir), *args.extra.split()]


def save_flags(save_every_updates: int, save_dir: Path):
    return ["--save-dir", str(save_dir), "--save-interval-updates", str(save_every_updates),
            "--keep-interval-updates", "-1", "--no-epoch-checkpoints", "--disable-validation"]


DEMO_LR = 0.002  # examples/multi30k/demo.sh's learning rate of both stages (its default --lr)


def ours_lr(args):
    """The learning rate ours trains with: the last ``--lr`` of ``--extra`` (fairseq-train keeps the
    last), else demo.sh's."""
    lr, _ = split_lr(args.extra)
    return DEMO_LR if lr is None else lr


def ours_flags(args, seed, embeddings: Path):
    """curation_ablation's flags of every stage (its ``--extra`` is this script's ``--extra``),
    with the embeddings, and demo.sh's learning rate in place of common_flags' (an ``--lr`` in
    ``--extra``, later on the line, still wins; the anchor keeps its own)."""
    spec = argparse.Namespace(max_tokens=args.max_tokens, cpu=True, extra=args.extra)
    flags = [str(f) for f in common_flags(spec, args.arch, seed)] + ["--init-embeddings", str(embeddings)]
    flags[flags.index("--lr") + 1] = format(DEMO_LR, "g")
    return flags


def mass_command(args, seed, embeddings: Path, save_dir: Path):
    # curation_ablation.mass_pretrain's stage flags
    return [str(BIN / "fairseq-train"), str(args.data), *ours_flags(args, seed, embeddings),
            "--lambda-mass", "1", "--lambda-dae", "0", "--lambda-bt", "0",
            *save_flags(args.ours_save_every_updates, save_dir)]


def finetune_warmup(minutes: float) -> int:
    """examples/multi30k/demo.sh's fine-tuning warm-up: 50 updates under a 30-minute budget (the
    stage then has only a few hundred updates), else common_flags' 200."""
    return 50 if minutes < 30 else 200


def finetune_command(args, seed, embeddings: Path, save_dir: Path, mass_checkpoint: Path, minutes: float):
    # curation_ablation.finetune's stage flags (baseline system), without its in-training validation,
    # with demo.sh's warm-up for the budget in place of common_flags' (a --warmup-updates in --extra,
    # later on the line, still wins)
    flags = ours_flags(args, seed, embeddings)
    flags[flags.index("--warmup-updates") + 1] = str(finetune_warmup(minutes))
    return [str(BIN / "fairseq-train"), str(args.data), *flags, "--lambda-mass", "0",
            "--lambda-dae", "0:1,2000:0.1", "--lambda-bt", "1", "--bt-show-samples-interval", "0",
            "--finetune-from-model", str(mass_checkpoint), *save_flags(args.ours_save_every_updates, save_dir)]


def embeddings_command(args, embeddings: Path):
    return [str(BIN / "smallcap-embeddings"), str(args.data), "--dim", str(args.emb_dim), "--threads", "1",
            "--out", str(embeddings)]


# ---------------------------------------------------------------------------------------------
# training on the system clock


def checkpoint_state(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def fairseq_training_seconds(path: Path) -> float:
    """fairseq's cumulative training time stored in a checkpoint (what --stop-time-hours counts
    from when fairseq-train loads it)."""
    return float((checkpoint_state(path).get("extra_state") or {}).get("previous_training_time", 0.0))


def checkpoint_updates(path: Path) -> int:
    return int(checkpoint_state(path)["optimizer_history"][-1]["num_updates"])


def interval_updates(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


class SystemRun:
    """One system's training, its clock and its kept checkpoints, in WORK/SYSTEM/state.json."""

    def __init__(self, name, work: Path, args, threads: int, minutes: float, checkpoint_minutes: float, seed: int):
        self.name, self.args, self.threads = name, args, threads
        self.minutes, self.checkpoint_minutes, self.seed = minutes, checkpoint_minutes, seed
        self.dir = work / name
        self.embeddings = self.dir / f"emb{args.emb_dim}.vec"
        self.kept = self.dir / "kept"
        self.kept.mkdir(parents=True, exist_ok=True)
        self.state_file = self.dir / "state.json"
        # what the run's figures depend on: a resumed run must be the same run
        config = {"budget_s": minutes * 60, "seed": seed, "checkpoint_minutes": checkpoint_minutes, "threads": threads,
                  "arch": args.arch, "max_tokens": args.max_tokens, "emb_dim": args.emb_dim, "extra": args.extra,
                  "save_every_updates": args.save_every_updates if name == "anchor" else args.ours_save_every_updates,
                  **({} if name == "anchor" else {"lr": ours_lr(args)})}
        self.state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {
            "system": name, "stages": {}, "checkpoints": [], "next_mark_s": checkpoint_minutes * 60, **config}
        if name != "anchor":
            self.state.setdefault("lr", RECIPE_LR)  # (a run from before ours' rate was recorded ran at 0.001)
        changed = [f"{key} {self.state[key]!r}, now {value!r}" for key, value in config.items()
                   if key in self.state and self.state[key] != value
                   and not (isinstance(value, float) and abs(self.state[key] - value) < 1e-6)]
        if changed:
            refuse(f"{self.dir}: trained with other settings ({'; '.join(changed)}); use another --work")
        self.budget_s = self.state["budget_s"]

    @property
    def done(self):
        return (self.dir / "done.json").exists()

    def save(self):
        atomic_write_json(self.state_file, self.state)

    def env(self):
        return {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}

    def stage_done(self, stage):
        return self.state["stages"].get(stage, {}).get("end_s") is not None

    def run_embeddings(self):
        stage = self.state["stages"].setdefault("embeddings", {"start_s": 0.0})
        if stage.get("end_s") is not None:
            return
        if self.embeddings.exists():
            self.embeddings.unlink()  # an interrupted run's partial file
        command = embeddings_command(self.args, self.embeddings)
        say(f"[{self.name}] embeddings: $ {shlex.join(command)}")
        start = time.time()
        with open(self.dir / "embeddings.log", "a") as log:
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=self.env())
        if result.returncode != 0:
            sys.exit(f"[{self.name}] smallcap-embeddings failed, see {self.dir / 'embeddings.log'}")
        stage["end_s"] = stage["start_s"] + time.time() - start
        stage["command"] = shlex.join(command)
        self.save()
        say(f"[{self.name}] embeddings done at {stage['end_s'] / 60:.2f} min")

    def run_stage(self, stage_name, command, save_dir: Path, start_s: float, end_s: float, loads: Path = None):
        """Run (or resume) one fairseq-train stage from ``start_s`` until ``end_s`` on the system
        clock; ``loads``: the checkpoint it starts from when its save dir has none."""
        stage = self.state["stages"].setdefault(stage_name, {"start_s": start_s, "launches": []})
        if stage.get("end_s") is not None:
            return
        save_dir.mkdir(parents=True, exist_ok=True)
        last = save_dir / "checkpoint_last.pt"
        if stage["launches"]:  # an interrupted launch: settle its checkpoints, resume from its last
            previous = stage["launches"][-1]
            self.collect(stage_name, save_dir, previous["start_wall"], previous["base_s"], settled_all=True)
        base = stage.get("last_s", stage["start_s"]) if last.exists() else stage["start_s"]
        resume_from = last if last.exists() else loads
        fairseq_s = fairseq_training_seconds(resume_from) if resume_from else 0.0
        stop_hours = (fairseq_s + max(end_s - base, 1.0)) / 3600
        command = [*command, "--stop-time-hours", f"{stop_hours:.6f}"]
        log_path = self.dir / f"{stage_name}.log"
        say(f"[{self.name}] {stage_name} from {base / 60:.2f} until {end_s / 60:.2f} min "
            f"(OMP_NUM_THREADS={self.threads}): $ {shlex.join(command)}  > {log_path}")
        start_wall = time.time()
        stage["launches"].append({"start_wall": start_wall, "base_s": base, "command": shlex.join(command)})
        stage["command"] = shlex.join(command)
        self.save()
        with open(log_path, "a") as log:
            log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(command)}\n")
            log.flush()
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env())
            shown = time.time()
            while True:
                returncode = process.poll()
                self.collect(stage_name, save_dir, start_wall, base, settled_all=returncode is not None)
                if returncode is not None:
                    break
                if time.time() - shown > self.args.progress_seconds:
                    shown = time.time()
                    say(f"[{self.name}] {stage_name}: {(base + shown - start_wall) / 60:.1f} min, "
                        f"{len(self.state['checkpoints'])} checkpoints kept")
                time.sleep(self.args.poll_seconds)
        if returncode != 0:
            sys.exit(f"[{self.name}] {stage_name} failed ({returncode}), see {log_path}:\n"
                     + log_path.read_text()[-3000:])
        stage["end_s"] = base + time.time() - start_wall
        # the stage's last checkpoint is always a point of the curve
        updates = checkpoint_updates(last)
        if not any(c["stage"] == stage_name and c["num_updates"] == updates for c in self.state["checkpoints"]):
            kept = self.kept / f"{stage_name}_{updates:07d}.pt"
            if not kept.exists():
                os.link(last, kept)
            self.add_checkpoint(kept, stage_name, updates, stage["last_s"])
        self.state["checkpoints"][-1]["stage_last"] = True
        self.save()
        say(f"[{self.name}] {stage_name} done at {stage['end_s'] / 60:.2f} min ({updates} updates)")

    def collect(self, stage_name, save_dir: Path, start_wall: float, base: float, settled_all: bool):
        """Keep or delete the interval checkpoints fairseq is done with (all of them once it has
        exited; else all but the newest, which fairseq copies to checkpoint_last.pt next)."""
        files = sorted(save_dir.glob("checkpoint_*_*.pt"), key=interval_updates)
        for path in files if settled_all else files[:-1]:
            seconds = base + path.stat().st_mtime - start_wall
            if seconds >= self.state["next_mark_s"]:
                updates = interval_updates(path)
                kept = self.kept / f"{stage_name}_{updates:07d}.pt"
                os.replace(path, kept)
                self.add_checkpoint(kept, stage_name, updates, seconds)
                step = self.checkpoint_minutes * 60
                self.state["next_mark_s"] = (math.floor(seconds / step) + 1) * step
            else:
                path.unlink()
        last = save_dir / "checkpoint_last.pt"
        if last.exists() and last.stat().st_mtime >= start_wall:
            self.state["stages"][stage_name]["last_s"] = base + last.stat().st_mtime - start_wall
        self.save()

    def add_checkpoint(self, path: Path, stage, updates, seconds):
        self.state["checkpoints"].append({"checkpoint": path.name, "stage": stage, "num_updates": updates,
                                          "minutes": round(seconds / 60, 3)})
        self.save()
        say(f"[{self.name}] kept {path.name} at {seconds / 60:.2f} min")

    def train(self):
        if self.done:
            say(f"[{self.name}] trained (done.json): skipped")
            return
        if self.name == "anchor":
            self.run_stage("train", anchor_command(self.args, self.dir / "ckpt"), self.dir / "ckpt", 0.0,
                           self.budget_s)
        else:
            self.run_embeddings()
            emb_end = self.state["stages"]["embeddings"]["end_s"]
            mass_end = emb_end + MASS_SHARE * max(self.budget_s - emb_end, 0.0)
            self.run_stage("mass", mass_command(self.args, self.seed, self.embeddings, self.dir / "mass"),
                           self.dir / "mass", emb_end, mass_end)
            mass_last = self.dir / "mass" / "checkpoint_last.pt"
            self.run_stage("finetune", finetune_command(self.args, self.seed, self.embeddings, self.dir / "finetune",
                                                        mass_last, self.minutes),
                           self.dir / "finetune", self.state["stages"]["mass"]["end_s"], self.budget_s,
                           loads=mass_last)
        last_stage = "train" if self.name == "anchor" else "finetune"
        atomic_write_json(self.dir / "done.json", {"end_minutes": round(self.state["stages"][last_stage]["end_s"] / 60, 3),
                                                   "threads": self.threads})


# ---------------------------------------------------------------------------------------------
# scoring


class Scorer:
    """Greedy translation of a binarized split both ways by a checkpoint of either task."""

    def __init__(self, args):
        import sentencepiece

        self.args = args
        self.spm = sentencepiece.SentencePieceProcessor(model_file=str(args.data / "spm.model"))
        self.user_dir_loaded = False
        self.threads = args.threads
        self.lock = threading.Lock()  # one checkpoint at a time (the training threads only watch files)

    def load(self, checkpoint: Path):
        import torch
        from fairseq import checkpoint_utils, utils

        if not self.user_dir_loaded:
            sys.path.insert(0, str(REPO))
            utils.import_user_module(argparse.Namespace(user_dir=str(USER_DIR)))
            logging.getLogger().setLevel(logging.WARNING)  # (fairseq's imports log at INFO: quiet)
            self.user_dir_loaded = True
        torch.set_num_threads(self.threads)
        models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
            [str(checkpoint)], arg_overrides={"data": str(self.args.data)})
        return models[0].eval(), task

    def translate(self, model, task, sentences, src, tgt):
        import torch
        from fairseq.data import data_utils

        from fairseq_smallcap.backtranslation import greedy_decode

        d = task.source_dictionary
        lang = {code: d.index(f"__{code}__") for code in (src, tgt)}
        if d.unk() in lang.values():
            raise SystemExit(f"no language token __{src}__ or __{tgt}__ in the model's dictionary")
        banned = [d.index("<mask>"), d.bos(), *(d.index(f"__{code}__") for code, _ in DIRECTIONS)]
        left_pad = bool(getattr(getattr(task, "cfg", None) or task.args, "left_pad_source", False))
        max_len = model.max_decoder_positions() - 1
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        results = [None] * len(sentences)
        with torch.no_grad():
            for start in range(0, len(order), self.args.batch_size):
                rows = order[start:start + self.args.batch_size]
                sources = [torch.cat([torch.LongTensor([lang[src]]), sentences[i]]) for i in rows]
                tokens = data_utils.collate_tokens(sources, d.pad(), d.eos(), left_pad=left_pad)
                lengths = torch.LongTensor([len(s) for s in sources])
                hyps = greedy_decode(model, tokens, lengths, bos=torch.full_like(lengths, lang[tgt]), eos=d.eos(),
                                     pad=d.pad(), max_len_a=1.3, max_len_b=5, max_len=max_len, banned_tokens=banned)
                for i, h in zip(rows, hyps):
                    results[i] = self.detok(d, h)
        return results

    def detok(self, d, tokens):
        pieces = [d[t] for t in tokens.tolist() if t not in (d.eos(), d.pad())]
        return self.spm.decode_pieces(pieces)

    def score(self, checkpoint: Path, split: str, lines):
        """{"en-fr": translation_scores, "fr-en": ..., "bleu": mean BLEU} of a checkpoint on
        ``split`` (valid or test), its first ``lines`` sentences (all: None)."""
        with self.lock:
            return self._score(checkpoint, split, lines)

    def _score(self, checkpoint: Path, split: str, lines):
        from fairseq.data import data_utils

        model, task = self.load(checkpoint)
        out = {}
        for src, tgt in DIRECTIONS:
            dataset = data_utils.load_indexed_dataset(str(self.args.data / f"{split}.en-fr.{src}"),
                                                      task.source_dictionary, "mmap")
            n = len(dataset) if lines is None else min(lines, len(dataset))
            hyps = self.translate(model, task, [dataset[i] for i in range(n)], src, tgt)
            refs = scoring.read_lines(self.args.data / "raw" / f"{split}.{tgt}")[:n]
            sources = scoring.read_lines(self.args.data / "raw" / f"{split}.{src}")[:n]
            out[f"{src}-{tgt}"] = scoring.translation_scores(hyps, refs, sources)
        out["bleu"] = round((out["en-fr"]["bleu"] + out["fr-en"]["bleu"]) / 2, 2)
        return out


def cached_score(scorer, run: SystemRun, entry, split, lines):
    scores_dir = run.dir / "scores"
    scores_dir.mkdir(exist_ok=True)
    cache = scores_dir / f"{Path(entry['checkpoint']).stem}.{split}.{lines or 'all'}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    start = time.time()
    result = scorer.score(run.kept / entry["checkpoint"], split, lines)
    atomic_write_json(cache, result)
    say(f"[{run.name}] {entry['checkpoint']} ({entry['stage']}, {entry['num_updates']} updates, "
        f"{entry['minutes']:.2f} min): {split} BLEU en→fr {result['en-fr']['bleu']:.2f}, "
        f"fr→en {result['fr-en']['bleu']:.2f}, mean {result['bleu']:.2f}  ({time.time() - start:.0f} s)")
    return result


def curve_of(scorer, run: SystemRun, lines):
    curve = []
    for entry in sorted(run.state["checkpoints"], key=lambda c: c["minutes"]):  # (a copy: the anchor's lane appends)
        scores = cached_score(scorer, run, entry, "valid", lines)
        curve.append({**{k: entry[k] for k in ("minutes", "stage", "num_updates", "checkpoint")},
                      "en-fr": scores["en-fr"]["bleu"], "fr-en": scores["fr-en"]["bleu"], "bleu": scores["bleu"]})
    return curve


def minutes_to_reach(curve, level):
    """(minutes of the first point at or above ``level``, whether it is the curve's first point,
    the minutes of the point before it or None); (None, False, None) if no point is."""
    for i, point in enumerate(curve):
        if point["bleu"] >= level:
            return point["minutes"], i == 0, curve[i - 1]["minutes"] if i else None
    return None, False, None


def ratio_kind(ours_first, anchor_first):
    if ours_first and anchor_first:
        return "unbounded: both reach the level at their first checkpoint (checkpoint more often to measure it)"
    if ours_first:
        return "lower bound: ours reaches the level at its first checkpoint, maybe earlier"
    if anchor_first:
        return "upper bound: the anchor reaches the level at its first checkpoint, maybe earlier"
    return "exact (to the checkpoint interval)"


def time_to_quality(curves):
    """The anchor's level (its last point's BLEU), the minutes each system needs to reach it, and
    the ratio (anchor / ours: how many times faster ours reaches it) with what it bounds, for every
    run of ours (every curve but ``anchor``: one per seed). ``ratio_anchor_over_ours`` is the
    smallest of them (None if a run of ours never reaches the level); with several runs of ours,
    ``ratios`` has each one, ``ratio_mean`` / ``ratio_std`` their mean and sample std and
    ``ratio_ci95`` the mean's 95% Student t interval.
    ``ratio_range``: the bounds of the smallest ratio set by the checkpoint intervals (each system
    first reached the level after its previous scored checkpoint)."""
    level = curves["anchor"][-1]["bleu"]
    ours_names = [name for name in curves if name != "anchor"]
    anchor_min, anchor_first, anchor_before = minutes_to_reach(curves["anchor"], level)
    reach = {name: minutes_to_reach(curves[name], level) for name in ours_names}
    summary = {"anchor_level": level,
               "minutes_to_level": {"anchor": anchor_min, **{name: reach[name][0] for name in ours_names}},
               "reached_at_first_checkpoint": {"anchor": anchor_first, **{name: reach[name][1] for name in ours_names}}}
    ratios = {}
    for name in ours_names:
        ours_min, ours_first, ours_before = reach[name]
        if ours_min is None:
            ratios[name] = {"ratio": None, "kind": f"{name} never reaches the anchor's level", "range": [None, None]}
            continue
        # each system first reached the level after its point before (if any) and at the latest at
        # its point: the ratio lies between these bounds (None: unbounded on that side)
        ratios[name] = {"ratio": round(anchor_min / ours_min, 3), "kind": ratio_kind(ours_first, anchor_first),
                        "range": [None if anchor_before is None else round(anchor_before / ours_min, 3),
                                  None if ours_before is None else round(anchor_min / ours_before, 3)]}
    values = [r["ratio"] for r in ratios.values()]
    worst = (next(r for r in ratios.values() if r["ratio"] is None) if None in values
             else min(ratios.values(), key=lambda r: r["ratio"]))
    summary.update(ratio_anchor_over_ours=worst["ratio"], ratio_kind=worst["kind"], ratio_range=worst["range"])
    if len(ours_names) > 1:
        summary["ratios"] = ratios
        if None not in values:
            mean, (low, high) = scoring.t_interval_95(values)
            summary.update(ratio_mean=round(mean, 3), ratio_std=round(statistics.stdev(values), 3),
                           ratio_ci95=[round(low, 3), round(high, 3)])
    return summary


def plot(path: Path, record):
    """Draw one ledger record: validation BLEU against minutes (log scale: ours' short budget and
    the anchor's 86 minutes on one axis), every system, the anchor's level, where each reaches it."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # before the import: it logs while importing
    import matplotlib  # (here only: the rest of the script needs no matplotlib)
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = record["figures"]
    seeds = f.get("ours_seeds") or {"ours": None}
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (name, curve) in enumerate(f["curves"].items()):
        seed = "" if seeds.get(name) is None else f"seed {seeds[name]}, "
        label = ("fairseq online_backtranslation (anchor), budget "
                 f"{f['budget_minutes']:g} min" if name == "anchor" else
                 f"ours ({record['recipe']}, {seed}budget {f.get('ours_budget_minutes', f['budget_minutes']):g} min)")
        ax.plot([p["minutes"] for p in curve], [p["bleu"] for p in curve], marker="o", markersize=3,
                color=f"C{i}", label=label)
        reached = f["minutes_to_level"].get(name)
        if reached is not None:
            ax.axvline(reached, color=f"C{i}", linestyle=":", alpha=0.7)
    ax.axhline(f["anchor_level"], color="grey", linestyle="--", alpha=0.7,
               label=f"anchor's level at the end of its budget ({f['anchor_level']:.2f})")
    ax.set_xscale("log")
    ax.set_xticks([1, 2, 5, 10, 20, 50, 100])
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("wall-clock minutes since the system's training began (log scale)")
    ax.set_ylabel("validation BLEU (mean of en→fr, fr→en), greedy")
    ratio = f.get("ratio_anchor_over_ours")
    ax.set_title("minutes to the anchor's level, anchor / ours: "
                 + (f"never reached by {', '.join(n for n, m in f['minutes_to_level'].items() if m is None)}"
                    if ratio is None else f"{ratio:.2f}"
                    + (f" (smallest of {len(f['ratios'])} seeds; mean {f['ratio_mean']:.2f} ± {f['ratio_std']:.2f})"
                       if "ratio_mean" in f else "")), fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)  # below: no curve hidden
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial{path.suffix}")
    fig.savefig(partial, dpi=120)
    plt.close(fig)
    os.replace(partial, path)
    say(f"plot: {path}")


def plot_from_ledger(ledger: Path, path: Path):
    """Draw the newest time-to-quality record of ``ledger`` (what the run with --plot drew)."""
    try:
        lines = [line for line in ledger.read_text(encoding="utf-8").splitlines() if line.strip()]
        record = json.loads(lines[-1])
        f = record["figures"]
        f["curves"]["anchor"], f["anchor_level"], f["minutes_to_level"], f["budget_minutes"], record["recipe"]
    except (OSError, IndexError, ValueError, KeyError, TypeError) as e:
        print(f"time_to_quality.py: error: --plot-only {ledger}: no time-to-quality record to draw "
              f"({type(e).__name__}: {e})", file=sys.stderr)
        sys.exit(2)
    plot(path, record)


# ---------------------------------------------------------------------------------------------


def prepare_data(args, work: Path):
    if args.data:
        args.data = Path(args.data).resolve()
        if not (args.data / "dict.txt").exists():
            refuse(f"--data {args.data}: no dict.txt (run smallcap-prepare first)")
        return
    args.data = (work / "data").resolve()
    if not (args.data / "prepare.json").exists():
        command = [str(BIN / "smallcap-prepare"), "--multi30k", "--dest", str(args.data), "--vocab-size", "8000",
                   *(["--raw-dir", args.raw_dir] if args.raw_dir else [])]
        say(f"data: $ {shlex.join(command)}")
        with open(work / "prepare.log", "a") as log:
            if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                sys.exit(f"smallcap-prepare failed, see {work / 'prepare.log'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="output directory (re-running resumes); required unless --plot-only")
    parser.add_argument("--data", default=None, help="a smallcap-prepare directory (default: prepare "
                        "Multi30k with an 8k vocabulary into WORK/data)")
    parser.add_argument("--raw-dir", default=None, help="Multi30k raw files (default: smallcap-prepare's)")
    parser.add_argument("--minutes", type=float, default=86.0,
                        help="wall-clock budget of the anchor (and of ours without --ours-minutes)")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0,
                        help="keep the first checkpoint after every this many minutes of the anchor's clock (and "
                             "of ours' without --ours-checkpoint-minutes)")
    parser.add_argument("--save-every-updates", type=int, default=50,
                        help="fairseq's --save-interval-updates: the resolution of the checkpoints' times")
    parser.add_argument("--ours-save-every-updates", type=int, default=None,
                        help="--save-every-updates of ours (default: --save-every-updates): ours trains faster per "
                             "minute, so the same number of updates is a coarser time resolution")
    parser.add_argument("--arch", default="smallcap_very_small")
    parser.add_argument("--max-tokens", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1, help="the anchor's seed (and ours' without --ours-seeds)")
    parser.add_argument("--ours-seeds", default=None,
                        help="comma-separated seeds of ours: one run of ours each, one after another (default: --seed)")
    parser.add_argument("--ours-minutes", type=float, default=None,
                        help="ours' wall-clock budget, its schedule scaled to it (default: --minutes)")
    parser.add_argument("--ours-checkpoint-minutes", type=float, default=None,
                        help="--checkpoint-minutes of ours (default: --checkpoint-minutes)")
    parser.add_argument("--emb-dim", type=int, default=128, help="smallcap-embeddings --dim (the model's)")
    parser.add_argument("--extra", default="", help="more fairseq-train flags for every command of both systems")
    parser.add_argument("--side-by-side", action="store_true",
                        help="train both systems at once, each with half of --threads")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count()),
                        help="OMP_NUM_THREADS of training (each system's half of it with --side-by-side) "
                             "and of scoring (default: $OMP_NUM_THREADS, else the CPU count)")
    parser.add_argument("--valid-lines", type=int, default=None, help="score only the first N valid sentences")
    parser.add_argument("--test-lines", type=int, default=None, help="score only the first N test sentences")
    parser.add_argument("--batch-size", type=int, default=128, help="sentences per decoding batch")
    parser.add_argument("--results-log", type=Path, default=None, help="append one JSON record here")
    parser.add_argument("--plot", type=Path, default=None, help="draw the curves into this image")
    parser.add_argument("--plot-only", type=Path, default=None, metavar="LEDGER",
                        help="train and score nothing: draw --plot from the newest record of this ledger")
    parser.add_argument("--poll-seconds", type=float, default=0.5, help=argparse.SUPPRESS)
    parser.add_argument("--progress-seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plot_only:
        if not args.plot:
            parser.error("--plot-only needs --plot FILE")
        return plot_from_ledger(args.plot_only, args.plot)
    if args.work is None:
        parser.error("--work is required (unless --plot-only)")
    args.ours_minutes = args.minutes if args.ours_minutes is None else args.ours_minutes
    if args.ours_checkpoint_minutes is None:
        args.ours_checkpoint_minutes = args.checkpoint_minutes
    if args.ours_save_every_updates is None:
        args.ours_save_every_updates = args.save_every_updates
    try:
        seeds = [int(s) for s in (args.ours_seeds or str(args.seed)).split(",")]
    except ValueError:
        parser.error(f"--ours-seeds {args.ours_seeds!r}: not a comma-separated list of integers")
    if len(set(seeds)) != len(seeds):
        parser.error(f"--ours-seeds {args.ours_seeds!r}: a seed twice")
    if min(args.minutes, args.ours_minutes, args.checkpoint_minutes, args.ours_checkpoint_minutes) <= 0 \
            or min(args.save_every_updates, args.ours_save_every_updates) < 1:
        parser.error("--minutes, --ours-minutes and the checkpoint minutes must be positive, "
                     "--save-every-updates and --ours-save-every-updates at least 1")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    prepare_data(args, work)
    threads = max(1, args.threads // 2) if args.side_by_side else args.threads
    recipe = RECIPE + ("+shared" if "--share-all-embeddings" in args.extra.split() else "")
    runs = {"anchor": SystemRun("anchor", work, args, threads, args.minutes, args.checkpoint_minutes, args.seed)}
    for seed in seeds:
        name = "ours" if len(seeds) == 1 else f"ours-s{seed}"
        runs[name] = SystemRun(name, work, args, threads, args.ours_minutes, args.ours_checkpoint_minutes, seed)
    ours_runs = [run for name, run in runs.items() if name != "anchor"]
    if args.side_by_side and len(seeds) * args.ours_minutes > args.minutes:
        say(f"warning: {len(seeds)} runs of ours x {args.ours_minutes:g} minutes outlast the anchor's "
            f"{args.minutes:g}: the last ones train alone, not beside the anchor")
    scorer = Scorer(args)
    started = time.time()
    if args.side_by_side:
        # two lanes, each with half of the threads: the anchor; ours' runs one after another, then
        # (while the anchor still trains) the validation scores of every checkpoint kept so far
        failures = []

        def lane(lane_runs, score):
            try:
                for run in lane_runs:
                    run.train()
                if score:
                    scorer.threads = threads
                    for run in [*lane_runs, runs["anchor"]]:
                        curve_of(scorer, run, args.valid_lines)
            except SystemExit as error:  # (sys.exit in a thread ends only the thread)
                failures.append(str(error))
            except BaseException:  # anything else: the record would be made from a half-trained state
                failures.append(traceback.format_exc())

        workers = [threading.Thread(target=lane, args=([runs["anchor"]], False)),
                   threading.Thread(target=lane, args=(ours_runs, True))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if failures:
            sys.exit("\n".join(failures))
        unfinished = [run.name for run in runs.values() if not run.done]
        if unfinished:
            sys.exit(f"{', '.join(unfinished)}: training did not finish; run the same command again to resume")
    else:
        for run in runs.values():
            run.train()
    training_wall = time.time() - started

    scorer.threads = args.threads
    curves = {name: curve_of(scorer, run, args.valid_lines) for name, run in runs.items()}
    for name, curve in curves.items():
        if not curve:
            sys.exit(f"[{name}] no checkpoint kept: raise --minutes or lower --save-every-updates")
    summary = time_to_quality(curves)
    test = {}
    for name, run in runs.items():
        best = max(curves[name], key=lambda p: (p["bleu"], p["minutes"]))
        last = curves[name][-1]
        test[name] = {}
        for which, point in (("last", last), ("best_valid", best)):
            entry = next(c for c in run.state["checkpoints"] if c["checkpoint"] == point["checkpoint"])
            scores = cached_score(scorer, run, entry, "test", args.test_lines)
            test[name][which] = {"checkpoint": point["checkpoint"], "minutes": point["minutes"],
                                 "valid_bleu": point["bleu"], **scores}

    say("\nvalidation BLEU (mean of both directions, greedy) against minutes:")
    for name in runs:
        say(f"  {name}: " + ", ".join(f"{p['minutes']:.1f}: {p['bleu']:.2f}" for p in curves[name]))
    level, reach = summary["anchor_level"], summary["minutes_to_level"]
    say(f"anchor's level at the end of its budget: {level:.2f}; minutes to reach it: "
        + ", ".join(f"{name} {minutes}" for name, minutes in reach.items())
        + f"; ratio anchor / ours {summary['ratio_anchor_over_ours']} ({summary['ratio_kind']})"
        + (f"; per run of ours {', '.join(str(r['ratio']) for r in summary['ratios'].values())}"
           if "ratios" in summary else ""))
    for name in runs:
        for which, t in test[name].items():
            say(f"  test_2016_flickr {name} {which} ({t['checkpoint']}, {t['minutes']:.1f} min): "
                f"BLEU en→fr {t['en-fr']['bleu']:.2f}, fr→en {t['fr-en']['bleu']:.2f}; "
                f"chrF {t['en-fr']['chrf']:.2f}, {t['fr-en']['chrf']:.2f}")
    signature = test[ours_runs[0].name]["last"]["en-fr"]
    say(f"signatures: BLEU {signature['bleu_signature']}; chrF {signature['chrf_signature']}")

    stamp = provenance()
    record = {
        "benchmark": "time_to_quality", "recipe": recipe,
        "figures": {"budget_minutes": args.minutes, "checkpoint_minutes": args.checkpoint_minutes,
                    "ours_budget_minutes": args.ours_minutes,
                    "ours_checkpoint_minutes": args.ours_checkpoint_minutes,
                    "anchor_seed": args.seed, "ours_seeds": {run.name: run.seed for run in ours_runs},
                    "curves": curves, **summary, "test": test,
                    "end_minutes": {name: round(run.state["stages"]["train" if name == "anchor" else "finetune"]["end_s"] / 60, 3)
                                    for name, run in runs.items()},
                    "ours_stage_end_minutes": {run.name: {stage: round(run.state["stages"][stage]["end_s"] / 60, 3)
                                                          for stage in ("embeddings", "mass", "finetune")}
                                               for run in ours_runs}},
        "setup": {"data": str(args.data), "valid_lines": args.valid_lines, "test_lines": args.test_lines,
                  "decoding": "greedy (fairseq_smallcap.backtranslation.greedy_decode), max 1.3 x source + 5 "
                              "tokens, sentencepiece-decoded, sacreBLEU/chrF defaults",
                  "minutes": "wall-clock minutes since the system's training began, measured around its "
                             "subprocesses (start-up included; ours: embeddings + MASS + DAE/BT on one clock; "
                             "data preparation and scoring on none); a checkpoint's minute is its file's mtime",
                  "arch": args.arch, "max_tokens": args.max_tokens, "extra": args.extra,
                  "side_by_side": args.side_by_side, "threads_per_system": threads,
                  "save_every_updates": args.save_every_updates, "ours_save_every_updates": args.ours_save_every_updates,
                  "this_invocation_trained_s": round(training_wall, 1),
                  "finetune_warmup_updates": finetune_warmup(args.ours_minutes),
                  "ours_lr": ours_lr(args),
                  "commands": {name: {stage: info.get("command") for stage, info in run.state["stages"].items()}
                               for name, run in runs.items()}},
        "command": stamp["command"], "git_commit": stamp["commit"], "machine": stamp["machine"],
        "omp_num_threads": stamp["omp_num_threads"], "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    if args.plot:
        plot(args.plot, record)
    if args.results_log:
        args.results_log.parent.mkdir(parents=True, exist_ok=True)
        with open(args.results_log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        say(f"ledger: {args.results_log}")


if __name__ == "__main__":
    main()
