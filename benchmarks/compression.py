"""Smaller and faster after training (issue 22): every compression variant of one trained
checkpoint measured the same way, against ``fairseq-generate`` fp32 timed in the same run.

    python benchmarks/compression.py --work runs/compression --checkpoint CKPT --data DATA \
        [--variants fairseq-fp32,ct2-int8,...] [--prune-sparsities 0.5,0.8 --prune-train-flags "..."] \
        [--results-log benchmarks/results/compression.jsonl] [--plot FILE]

Variants (``--variants``, comma-separated; the default is every one below that can run):

* ``fairseq-fp32`` -- the anchor: the checkpoint (optimizer state dropped) decoded by
  ``fairseq-generate``;
* ``torch-bf16`` -- the weights stored in bfloat16, decoded in bf16 by ``smallcap-baseline-decode``
  (fairseq's SequenceGenerator); ``torch-int8-dynamic`` -- torch dynamic int8 quantization of
  every Linear at load time (on disk: the fp32 checkpoint);
* ``ct2-float32``, ``ct2-int8``, ``ct2-int16``, ``ct2-int8_float16`` -- ``smallcap-export-ct2
  --quantization Q``, decoded by ``smallcap-translate``. ``int8_float16`` stores the matrices in
  int8 and the other float parameters (position tables, biases, layer norms; not the int8
  scales) in float16: on a CPU, which has no float16 arithmetic, CTranslate2 loads it as int8
  with float32 for the rest (its ``int8_float32``), so it is ``ct2-int8``'s arithmetic on values
  rounded to float16, from a smaller file;
* ``lowrank-E`` -- ``smallcap-lowrank --layers '.*' --energy E`` (every Linear layer at the
  smallest rank keeping the fraction E of its squared singular values), fine-tuned only when
  ``--lowrank-train-flags`` is given, merged back (``--merge``) and exported to ct2-int8;
* ``structured-hH-fF`` -- ``smallcap-prune-structured --prune-heads H --ffn-keep F`` (H heads
  removed from every attention module, the fraction F of FFN neurons kept), fine-tuned only when
  ``--structured-train-flags`` is given (with the pruned shapes: ``--encoder-heads-kept``,
  ``--decoder-heads-kept``, ``--encoder-ffn-embed-dim``, ``--decoder-ffn-embed-dim``), exported to
  ct2-int8;
* ``prune-S`` -- magnitude pruning to sparsity S with learning-rate rewinding
  (``smallcap-prune-rounds`` over all ``--prune-sparsities``, from the checkpoint, with
  ``--prune-train-flags``), each round finalized (``smallcap-prune-finalize``) and decoded by
  ``fairseq-generate`` fp32. Skipped unless ``--prune-train-flags`` is given.
* ``dense-ft`` -- the control of the fine-tuned variants: the checkpoint fine-tuned, unpruned, with
  ``--prune-train-flags`` (else ``--structured-train-flags``), decoded by ``fairseq-generate`` fp32.
  A fine-tuned variant's loss against the checkpoint mixes what it removed with the extra training;
  against ``dense-ft`` it is the removal's alone, for the variants fine-tuned once with the same
  flags: the first pruning round, and a structured or low-rank variant given the same flags (the
  targets' details give it for those only). Not a compression: left out of the Pareto set.
  Skipped without either flag.

Every tool is called as a subprocess by its console-script name, from the bin directory of the
Python running this script. Every step is resumable: a variant's model is built once
(``WORK/VARIANT/built.json``) and each measurement is kept (``WORK/VARIANT/measure/*.json``); a
re-run only does what is missing (``--force-measure`` measures again, e.g. on a quiet machine).

What each figure counts:

* ``params`` / ``params_nonzero``: the floating-point tensors of the model's state dict (fairseq
  bookkeeping buffers excluded, tied weights once), in the checkpoint the variant is made from
  (a CTranslate2 model holds the same parameters, quantized); ``lowrank`` also records the
  factorised model's count;
* ``weights_mb``: bytes on disk / 1e6 of the weights -- the checkpoint without optimizer state
  (fairseq, torch variants; bf16 is stored in bf16, int8-dynamic quantizes at load time and
  stores fp32), or CTranslate2's ``model.bin``; ``size_mb``: everything needed to translate raw
  text -- the checkpoint with the data's ``dict.txt`` and ``spm.model``, or the whole CTranslate2
  model directory (``model.bin``, vocabulary, ``spm.model``, metadata). The ratios have both;
  the Pareto set, the plot and the size target use ``size_mb``;
* ``peak_rss_mib``: the largest resident set (``ru_maxrss`` from ``os.wait4`` of the decoding
  process, its reaped children included) over the variant's decoding runs, MiB; per run in the
  speed grid too;
* speed (``speed``, one entry per threads x batch x beam, en->fr on the first
  ``--speed-sentences`` test sentences): ``tokens_per_s`` = target tokens / decoding seconds,
  where target tokens are the sentencepiece pieces of the detokenized output re-encoded by the
  data's ``spm.model`` (end of sentence not counted; the same count for every variant), and
  decoding seconds are the tool's own measure of its translation loop (model loading and process
  start excluded: ``fairseq-generate``'s "Translated ... (N sentences/s)", the baseline's
  seconds, ``smallcap-translate``'s "lines translated in ... (N lines/s)"); ``process_s`` is the
  whole process's wall time. Threads: ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` of the process and
  the tool's ``--threads`` where it has one; CTranslate2 spends T threads as ``--ct2-layout``
  says: ``inter`` (the default), T batches translated in parallel with one thread each
  (``smallcap-translate --threads 1 --inter-threads T``, CTranslate2's layout for throughput), or
  ``intra``, one batch at a time on T threads (``--threads T``); each speed entry records its
  ``layout``, and a measurement made with another layout is made again;
* ``test``: sacreBLEU and chrF with signatures on test_2016_flickr both ways (``--quality-beam``,
  batch ``--quality-batch-size``, the most threads), with ``benchmarks/scoring.py``; ``fidelity``:
  BLEU of the variant's output against the anchor's output with the same decoding settings (per
  direction and their mean; in the speed grid per setting);
* ``ratios`` against the anchor: tokens/s at batch 32 (greedy, beam 4) at each thread count
  (``speed_tT_b32_*``; unprefixed: the most threads), size (``size``: ``size_mb``; ``weights``:
  ``weights_mb``), and BLEU loss (anchor's mean BLEU of both directions minus the variant's).
  The speed target holds only if it holds at every thread count measured.
* speed runs shorter than ``--min-speed-seconds`` of decoding are repeated (at most 10 runs, the
  same hypotheses each time) and the median run kept (``runs``, ``tokens_per_s_runs``).

The ledger record (``--results-log``, one JSON line per invocation) holds every variant's figures,
the targets of issue 22 as met / not met, the Pareto set, the command, commit, machine and date.
``--plot FILE`` draws BLEU and fidelity against size and against tokens/s at batch 32.
"""
import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from curation_ablation import REPO, provenance  # (benchmarks/, beside this script)
from scoring import read_lines, translation_scores

BIN = Path(sys.executable).parent
USER_DIR = REPO / "fairseq_smallcap"
FIXED = ["fairseq-fp32", "torch-bf16", "torch-int8-dynamic", "ct2-float32", "ct2-int8", "ct2-int16", "ct2-int8_float16"]
INT8_CT2 = ("ct2-int8", "ct2-int8_float16")  # int8 arithmetic on the CPU: the int8 targets hold for each
DEFAULT_LOWRANK = ["lowrank-0.9"]
DEFAULT_STRUCTURED = ["structured-h0-f0.5"]  # (smallcap_very_small has one head per attention: none to remove)
DIRECTIONS = (("en", "fr"), ("fr", "en"))
ANCHOR = "fairseq-fp32"
SPEED_BATCH = 32  # the batch of the speed ratios and of the Pareto set
MEASURE_VERSION = 1


class BenchError(Exception):
    """Something this benchmark cannot do; reported in one line (exit status 2)."""


def tool(name):
    """The command of a console script of this environment, by name (not by module path)."""
    path = BIN / name
    if not path.exists():
        raise BenchError(f"{path}: not installed (pip install -e . installs the console scripts)")
    return [str(path)]


# ---------------------------------------------------------------------------------------------
# running


def run_logged(cmd, log: Path, env=None, stdout_path: Path = None):
    """Run ``cmd`` with stderr (and stdout, unless ``stdout_path``) to ``log``; return
    (wall seconds, peak RSS in MiB of the process and its reaped children)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(c) for c in cmd]
    with open(log, "w", encoding="utf-8") as err, open(stdout_path or os.devnull, "w", encoding="utf-8") as out:
        err.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        err.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out if stdout_path else err, stderr=err, env=env, cwd=REPO)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(True)[-15:])
        raise BenchError(f"{Path(cmd[0]).name} exited with status {proc.returncode} (log {log}):\n{tail}")
    return wall, usage.ru_maxrss / 1024  # Linux: KiB


def thread_env(threads: int):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def done_json(path: Path):
    if path.exists():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None
    return None


def write_json(path: Path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# data: the first N test sentences as a data directory of their own


def subset_data(data: Path, dest: Path, n):
    """``data`` itself when ``n`` is None, else ``dest``: a data directory whose test split (binarized,
    and raw/test.*) is the first ``n`` test sentences; every other file is a link to ``data``'s."""
    if n is None:
        return data
    if (dest / "subset.json").exists():
        return dest
    import torch
    from fairseq.data import indexed_dataset

    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for entry in data.iterdir():
        if entry.name != "raw" and not re.match(r"test\.[^.]+-[^.]+\.[^.]+\.(bin|idx)$", entry.name):
            (tmp / entry.name).symlink_to(entry.resolve())
    (tmp / "raw").mkdir()
    for entry in (data / "raw").iterdir():
        if entry.name.startswith("test."):
            lines = read_lines(entry)[:n]
            (tmp / "raw" / entry.name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        else:
            (tmp / "raw" / entry.name).symlink_to(entry.resolve())
    vocab = sum(1 for _ in open(data / "dict.txt", encoding="utf-8")) + 4
    for idx in data.glob("test.*.idx"):
        prefix = str(idx)[:-4]
        source = indexed_dataset.make_dataset(prefix, impl="mmap")
        out = tmp / Path(prefix).name
        builder = indexed_dataset.make_builder(str(out) + ".bin", impl="mmap", vocab_size=vocab)
        for i in range(min(n, len(source))):
            builder.add_item(torch.as_tensor(source[i]))
        builder.finalize(str(out) + ".idx")
    (tmp / "subset.json").write_text(json.dumps({"from": str(data), "sentences": n}) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# checkpoints: stripping, parameter counts


def load_state(path: Path):
    import torch

    import fairseq_smallcap  # noqa: F401  (registers what the weights-only loader must accept)

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an older checkpoint with objects the weights-only loader refuses
        return torch.load(path, map_location="cpu", weights_only=False)


def strip_checkpoint(source: Path, dest: Path, dtype=None):
    """``source`` without optimizer state and progress (the model as it ships), its floating-point
    weights in ``dtype`` if given; written to a temporary file and renamed."""
    import torch

    state = load_state(source)
    if dtype is not None:
        converted = {}  # tied tensors stay one tensor

        def convert(v):
            key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
            if key not in converted:
                converted[key] = v.to(dtype)
            return converted[key]

        state["model"] = {k: (convert(v) if torch.is_floating_point(v) else v) for k, v in state["model"].items()}
    last = state["optimizer_history"][-1] if state.get("optimizer_history") else {}
    state["optimizer_history"] = [{"criterion_name": last.get("criterion_name"),
                                   "optimizer_name": last.get("optimizer_name"),
                                   "lr_scheduler_state": {}, "num_updates": 0}]
    state.pop("last_optimizer_state", None)
    state["extra_state"] = {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "version": 2}}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, dest)


def count_params(path: Path):
    """(parameters, non-zero parameters) of a checkpoint's model: its floating-point tensors,
    fairseq's bookkeeping buffers left out, shared (tied) tensors counted once."""
    import torch

    state = load_state(path)["model"]
    seen, total, nonzero = set(), 0, 0
    for name, t in state.items():
        if not torch.is_floating_point(t) or name.endswith(("._float_tensor", ".version")):
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in seen:
            continue
        seen.add(key)
        total += t.numel()
        nonzero += int(torch.count_nonzero(t))
    return total, nonzero


def size_mb(path: Path) -> float:
    if path.is_dir():
        return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 4)
    return round(path.stat().st_size / 1e6, 4)


# ---------------------------------------------------------------------------------------------
# variants: how each is built


def variant_kind(name):
    if name in FIXED or name == "dense-ft":
        return name
    for kind, pattern in (("lowrank", r"lowrank-(0?\.\d+|1(\.0*)?)"), ("prune", r"prune-(0?\.\d+)"),
                          ("structured", r"structured-h(\d+)-f(0?\.\d+|1(\.0*)?)")):
        if re.fullmatch(pattern, name):
            return kind
    raise BenchError(f"unknown variant {name!r} (known: {', '.join(FIXED)}, lowrank-E, prune-S, structured-hH-fF, dense-ft)")


def export_ct2(checkpoint: Path, data: Path, out: Path, quantization: str, log: Path):
    if not (out / "model.bin").exists():
        shutil.rmtree(out, ignore_errors=True)
        run_logged([*tool("smallcap-export-ct2"), checkpoint, "--data", data, "--out", out,
                    "--quantization", quantization], log)
    return out


def fine_tune(data: Path, init: Path, save_dir: Path, flags: str, extra, log: Path) -> Path:
    """``fairseq-train DATA FLAGS --finetune-from-model INIT``; resumes from its checkpoint_last.pt."""
    last = save_dir / "checkpoint_last.pt"
    if (save_dir / "done").exists():
        return last
    cmd = [*tool("fairseq-train"), data, *shlex.split(flags), *extra, "--save-dir", save_dir]
    if not last.exists():
        cmd += ["--finetune-from-model", init]
    run_logged(cmd, log, env=thread_env(int(os.environ.get("OMP_NUM_THREADS") or 1)))
    (save_dir / "done").write_text("")
    return last


def checkpoint_arch(path: Path) -> str:
    """The ``--arch`` a checkpoint was trained with (its model options)."""
    model = load_state(path)["cfg"]["model"]
    options = model if isinstance(model, dict) else vars(model)  # fairseq keeps legacy archs' as a Namespace
    return options.get("arch") or options.get("_name") or "–"


def structured_shape_flags(pruned: Path) -> list:
    """The fairseq-train flags that build a model of a structured-pruned checkpoint's shapes (its
    model options, written by smallcap-prune-structured), so that --finetune-from-model loads it."""
    model = load_state(pruned)["cfg"]["model"]
    flags = []
    for side in ("encoder", "decoder"):
        for option in (f"{side}_heads_kept", f"{side}_ffn_embed_dim"):
            if getattr(model, option, None) is not None:
                flags += ["--" + option.replace("_", "-"), getattr(model, option)]
    return flags


def dense_ft_flags(args):
    """The fine-tuning flags of the ``dense-ft`` control: those of the pruning rounds, else those of
    the structured variants."""
    return args.prune_train_flags or args.structured_train_flags


# the kinds that are fine-tuned: kind -> (their flags, why the kind is skipped without them, or
# None where it is built without fine-tuning)
FINE_TUNED = {"lowrank": (lambda args: args.lowrank_train_flags, None),
              "structured": (lambda args: args.structured_train_flags, None),
              "prune": (lambda args: args.prune_train_flags, "needs --prune-train-flags (it trains)"),
              "dense-ft": (dense_ft_flags, "needs --prune-train-flags or --structured-train-flags (the flags of "
                                           "the fine-tuning it controls)")}


def build_variant(name, args, work: Path):
    """Make the variant's model (once); return its description (engine, model path, counts)."""
    vdir = work / name
    record = vdir / "built.json"
    built = done_json(record)
    kind = variant_kind(name)
    train_flags = FINE_TUNED[kind][0](args) if kind in FINE_TUNED else None
    if built and kind in FINE_TUNED:  # its files are those of its fine-tuning, or of none
        was = built.get("train_flags", train_flags if built["fine_tuned"] == bool(train_flags) else "(others)")
        if was != train_flags:  # (a description from before the flags were kept: known by fine_tuned)
            raise BenchError(f"{name}: built in {vdir} with fine-tuning flags {was!r}, not {train_flags!r}: "
                             f"delete {vdir} or use another --work")
    if built and not args.rebuild:
        return built
    anchor = work / ANCHOR / "model.pt"
    logs = vdir / "logs"
    info = {"variant": name, "kind": kind, "fine_tuned": False,
            **({"train_flags": train_flags} if kind in FINE_TUNED else {})}
    if kind == ANCHOR:
        strip_checkpoint(args.checkpoint, anchor)
        info.update(engine="fairseq-generate", model=str(anchor), size_path=str(anchor), quantization="float32")
    elif kind == "torch-bf16":
        model = vdir / "model.pt"
        strip_checkpoint(anchor, model, dtype=__import__("torch").bfloat16)
        info.update(engine="baseline", precision="bf16", model=str(model), size_path=str(model), quantization="bfloat16")
    elif kind == "torch-int8-dynamic":
        info.update(engine="baseline", precision="int8", model=str(anchor), size_path=str(anchor),
                    quantization="int8 (dynamic, at load time)")
    elif kind.startswith("ct2-"):
        q = kind[4:]
        out = export_ct2(anchor, args.data, vdir / "model", q, logs / "export.log")
        info.update(engine="ct2", model=str(out), size_path=str(out), quantization=q)
    elif kind == "lowrank":
        energy = float(name.split("-", 1)[1])
        factorised = vdir / "factorised.pt"
        if not factorised.exists():
            run_logged([*tool("smallcap-lowrank"), anchor, "--out", factorised, "--layers", args.lowrank_layers,
                        "--energy", energy], logs / "factorise.log")
        info["params_factorised"], _ = count_params(factorised)
        source = factorised
        if args.lowrank_train_flags:
            source = fine_tune(args.data, factorised, vdir / "finetune", args.lowrank_train_flags,
                               ["--low-rank-ranks", factorised], logs / "finetune.log")
            info["fine_tuned"] = True
        merged = vdir / "merged.pt"
        if not merged.exists():
            run_logged([*tool("smallcap-lowrank"), "--merge", source, "--out", merged], logs / "merge.log")
        out = export_ct2(merged, args.data, vdir / "model", "int8", logs / "export.log")
        info.update(engine="ct2", model=str(out), size_path=str(out), quantization="int8", energy=energy,
                    params_from=str(merged))
    elif kind == "structured":
        m = re.fullmatch(r"structured-h(\d+)-f(.+)", name)
        heads, keep = int(m.group(1)), float(m.group(2))
        pruned = vdir / "pruned.pt"
        if not pruned.exists():
            run_logged([*tool("smallcap-prune-structured"), anchor, "--data", args.data, "--prune-heads", heads,
                        "--ffn-keep", keep, "--out", pruned], logs / "prune.log")
        source = pruned
        if args.structured_train_flags:
            source = fine_tune(args.data, pruned, vdir / "finetune", args.structured_train_flags,
                               structured_shape_flags(pruned), logs / "finetune.log")
            info["fine_tuned"] = True
        out = export_ct2(source, args.data, vdir / "model", "int8", logs / "export.log")
        info.update(engine="ct2", model=str(out), size_path=str(out), quantization="int8", heads_removed=heads,
                    ffn_keep=keep, params_from=str(source))
    elif kind == "dense-ft":
        tuned = fine_tune(args.data, anchor, vdir / "finetune", train_flags, [], logs / "finetune.log")
        model = vdir / "model.pt"
        strip_checkpoint(tuned, model)
        info.update(engine="fairseq-generate", model=str(model), size_path=str(model), quantization="float32",
                    fine_tuned=True)
    elif kind == "prune":
        sparsity = float(name.split("-", 1)[1])
        sparsities = sorted(set(args.prune_sparsities) | {sparsity})
        rounds_dir = work / "prune-rounds"
        rounds_done = rounds_dir / "rounds.done"
        if not (rounds_done.exists() and rounds_done.read_text() == ",".join(map(str, sparsities))):
            run_logged([*tool("smallcap-prune-rounds"), "--sparsities", ",".join(map(str, sparsities)),
                        "--init", anchor, "--save-dir", rounds_dir, "--", args.data,
                        *shlex.split(args.prune_train_flags)], work / "prune-rounds.log",
                       env=thread_env(int(os.environ.get("OMP_NUM_THREADS") or 1)))
            rounds_done.write_text(",".join(map(str, sparsities)))
        round_dir = rounds_dir / f"round{sparsities.index(sparsity) + 1}"
        finalized = vdir / "finalized.pt"
        if not finalized.exists():
            run_logged([*tool("smallcap-prune-finalize"), round_dir / "checkpoint_last.pt", "--out", finalized],
                       logs / "finalize.log")
        model = vdir / "model.pt"
        strip_checkpoint(finalized, model)
        info.update(engine="fairseq-generate", model=str(model), size_path=str(model), quantization="float32",
                    sparsity_target=sparsity, fine_tuned=True, round_dir=str(round_dir))
    params_from = Path(info.get("params_from") or (anchor if info["engine"] != "fairseq-generate" else info["model"]))
    if kind == "torch-bf16":
        params_from = anchor
    info["params"], info["params_nonzero"] = count_params(params_from)
    write_json(record, info)
    return info


def add_sizes(info, data: Path):
    """``weights_mb`` and ``size_mb`` of a built variant (see the module docstring), from the
    files as they are."""
    if info["engine"] == "ct2":
        info["weights_mb"] = info["model_bin_mb"] = size_mb(Path(info["model"]) / "model.bin")
        info["size_mb"] = size_mb(Path(info["size_path"]))
    else:
        info["weights_mb"] = size_mb(Path(info["size_path"]))
        info["size_mb"] = round(info["weights_mb"] + size_mb(data / "dict.txt") + size_mb(data / "spm.model"), 4)
    return info


# ---------------------------------------------------------------------------------------------
# decoding


class Pieces:
    """Target tokens of an output: its sentencepiece pieces under the data's spm.model."""

    def __init__(self, data: Path):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(data / "spm.model"))

    def count(self, lines):
        return sum(len(self.sp.encode(line)) for line in lines if line.strip())


TIME_PATTERNS = {
    # fairseq-generate: "Translated 1,000 sentences (12,345 tokens) in 9.8s (102.04 sentences/s, ...)"
    "fairseq-generate": re.compile(r"Translated ([\d,]+) sentences \([\d,]+ tokens\) in ([\d.]+)s \(([\d.]+) sentences/s"),
    # smallcap-baseline-decode: "int8: 1000 sentences, 123,456 parameters, 9.81 s, 1234 target tokens/s"
    "baseline": re.compile(r"(\d+) sentences, [\d,]+ parameters, ([\d.]+) s,"),
    # smallcap-translate: "FILE: 1,000 lines translated in 9.8 s (102.0 lines/s)"
    "ct2": re.compile(r"([\d,]+) lines translated in ([\d.]+) s \(([\d,.]+) lines/s\)"),
}


def decode_seconds(engine, log_text):
    """The tool's own decoding time, from the most precise of the figures it prints."""
    matches = TIME_PATTERNS[engine].findall(log_text)
    if not matches:
        raise BenchError(f"{engine}: no timing line in its log")
    m = matches[-1]
    n, seconds = int(m[0].replace(",", "")), float(m[1])
    if len(m) > 2 and float(m[2].replace(",", "")) > 0:
        rate = float(m[2].replace(",", ""))
        # printed with 1 (or 2) decimals each: take whichever has the smaller relative rounding error
        if seconds == 0 or 0.05 / rate < 0.05 / seconds:
            seconds = n / rate
    return seconds


def ct2_threads(threads, layout):
    """``smallcap-translate`` flags spending ``threads`` threads in ``layout`` (see --ct2-layout)."""
    return ["--threads", 1, "--inter-threads", threads] if layout == "inter" else ["--threads", threads]


def layout_of(info, threads, layout):
    """The thread layout a measurement of this variant uses: only CTranslate2 has a choice."""
    return layout if info["engine"] == "ct2" and threads > 1 else "intra"


def decode(info, data: Path, src, tgt, beam, batch, threads, out: Path, log: Path, max_len_b, layout="intra"):
    """Decode ``data``'s test split with the variant's engine; hypotheses (detokenized) to ``out``."""
    engine = info["engine"]
    if engine == "fairseq-generate":
        raw_out = out.with_name(out.name + ".generate")
        cmd = [*tool("fairseq-generate"), data, "--user-dir", USER_DIR, "--task", "unsupervised_translation",
               "-s", src, "-t", tgt, "--gen-subset", "test", "--path", info["model"], "--beam", beam,
               "--batch-size", batch, "--max-len-b", max_len_b, "--post-process", "sentencepiece", "--cpu",
               "--num-workers", "0"]
        wall, rss = run_logged(cmd, log, env=thread_env(threads), stdout_path=raw_out)
        hyps = {}
        for line in raw_out.read_text(encoding="utf-8").split("\n"):
            if line.startswith("H-"):
                sample_id, _score, text = (line[2:].split("\t", 2) + [""])[:3]
                hyps[int(sample_id)] = text
        lines = [hyps[i] for i in range(len(hyps))]
        text = log.read_text(encoding="utf-8") + raw_out.read_text(encoding="utf-8")
        raw_out.unlink()
    elif engine == "baseline":
        cmd = [*tool("smallcap-baseline-decode"), info["model"], "--data", data, "-s", src, "-t", tgt,
               "--precision", info["precision"], "--gen-subset", "test", "--beam", beam, "--batch-size", batch,
               "--max-len-b", max_len_b, "--threads", threads]
        wall, rss = run_logged(cmd, log, env=thread_env(threads), stdout_path=out)
        lines, text = read_lines(out), log.read_text(encoding="utf-8")
    else:
        cmd = [*tool("smallcap-translate"), "--model", info["model"], "-s", src, "-t", tgt, "--beam", beam,
               "--batch-size", batch, "--max-len", max_len_b, *ct2_threads(threads, layout),
               "--input", data / "raw" / f"test.{src}", "--output", out]
        wall, rss = run_logged(cmd, log, env=thread_env(threads))
        lines, text = read_lines(out), log.read_text(encoding="utf-8")
    expected = len(read_lines(data / "raw" / f"test.{src}"))
    if len(lines) != expected:
        raise BenchError(f"{info['variant']}: {len(lines)} hypotheses for {expected} test sentences (log {log})")
    out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return {"seconds": decode_seconds(engine, text), "process_s": round(wall, 3), "rss_mib": round(rss, 1),
            "sentences": len(lines)}


def fidelity(hyps, anchor_hyps):
    """sacreBLEU of ``hyps`` against the anchor's output as the reference, with effective order
    (n-gram orders absent from the whole output are left out: a short-trained model's one-word
    outputs have no 4-grams, and identical outputs then still score 100); 100 when both are
    entirely empty and equal."""
    from sacrebleu.metrics import BLEU

    hyps, anchor_hyps = list(hyps), list(anchor_hyps)
    if not any(h.strip() for h in hyps + anchor_hyps):
        return 100.0 if hyps == anchor_hyps else 0.0
    return round(BLEU(effective_order=True).corpus_score(hyps, [anchor_hyps]).score, 2)


def measure_speed(info, args, mdir: Path, speed_data: Path, pieces, threads, batch, beam):
    """One run of the speed grid (kept in WORK/VARIANT/measure/speed.tT.bB.beamN.json)."""
    src, tgt = args.speed_direction.split("-")
    key = f"t{threads}.b{batch}.beam{beam}"
    layout = layout_of(info, threads, args.ct2_layout)
    done = None if args.force_measure and key not in args.measured_now.setdefault(info["variant"], set()) \
        else done_json(mdir / f"speed.{key}.json")
    if not done or done.get("version") != MEASURE_VERSION or done.get("layout", "intra") != layout:
        out = mdir / f"speed.{key}.{tgt}"
        timings = []
        while not timings or (sum(t["seconds"] for t in timings) < args.min_speed_seconds and len(timings) < 10):
            timings.append(decode(info, speed_data, src, tgt, beam, batch, threads, out,
                                  mdir / f"speed.{key}.log", args.max_len_b, layout))
            if len(timings) == 1:
                hyps = read_lines(out)
            elif read_lines(out) != hyps:
                raise BenchError(f"{info['variant']}: {key}: a repeated run gave other hypotheses")
        tokens = pieces.count(hyps)
        timing = sorted(timings, key=lambda t: t["seconds"])[(len(timings) - 1) // 2]  # the median run
        done = {"version": MEASURE_VERSION, "threads": threads, "layout": layout, "batch": batch, "beam": beam,
                **timing, "rss_mib": max(t["rss_mib"] for t in timings), "runs": len(timings),
                "tokens": tokens, "words": sum(len(h.split()) for h in hyps),
                "tokens_per_s": round(tokens / timing["seconds"], 1) if timing["seconds"] else None,
                "tokens_per_s_runs": [round(tokens / t["seconds"], 1) if t["seconds"] else None for t in timings],
                "output": str(out)}
        write_json(mdir / f"speed.{key}.json", done)
        args.measured_now.setdefault(info["variant"], set()).add(key)
    return done


def measure_variant(info, args, work: Path, test_data: Path, speed_data: Path, pieces: Pieces):
    """Quality both ways and the speed grid; each measurement kept in WORK/VARIANT/measure/."""
    name = info["variant"]
    mdir = work / name / "measure"
    adir = work / ANCHOR / "measure"
    quality_threads = max(args.threads)
    row = dict(info)
    row["test"], row["speed"] = {}, {}
    for src, tgt in DIRECTIONS:
        key = f"quality.{src}-{tgt}.beam{args.quality_beam}.b{args.quality_batch_size}"
        layout = layout_of(info, quality_threads, args.ct2_layout)
        done = None if args.force_measure else done_json(mdir / f"{key}.json")
        if done and (done.get("version") != MEASURE_VERSION or done.get("layout", "intra") != layout):
            done = None  # made with another version or thread layout: measured again
        same = f"speed.t{quality_threads}.b{args.quality_batch_size}.beam{args.quality_beam}"
        if not done and test_data == speed_data \
                and f"{src}-{tgt}" == args.speed_direction and quality_threads in args.threads \
                and args.quality_batch_size in args.batch_sizes and args.quality_beam in args.beams:
            # the same decoding as a run of the speed grid: measured there, its output reused
            measure_speed(info, args, mdir, speed_data, pieces, quality_threads, args.quality_batch_size,
                          args.quality_beam)
            shutil.copyfile(mdir / f"{same}.{tgt}", mdir / f"{key}.{tgt}")
            done = {**done_json(mdir / f"{same}.json"), "output": str(mdir / f"{key}.{tgt}"), "same_run_as": same}
            write_json(mdir / f"{key}.json", done)
        if not done:
            out = mdir / f"{key}.{tgt}"
            timing = decode(info, test_data, src, tgt, args.quality_beam, args.quality_batch_size, quality_threads,
                            out, mdir / f"{key}.log", args.max_len_b, layout)
            done = {"version": MEASURE_VERSION, **timing, "output": str(out), "threads": quality_threads,
                    "layout": layout}
            write_json(mdir / f"{key}.json", done)
        hyps = read_lines(done["output"])
        refs = read_lines(test_data / "raw" / f"test.{tgt}")
        sources = read_lines(test_data / "raw" / f"test.{src}")
        scores = translation_scores(hyps, refs, sources)
        anchor_out = adir / f"{key}.{tgt}"
        scores["fidelity"] = fidelity(hyps, read_lines(anchor_out)) if anchor_out.exists() else None
        scores["peak_rss_mib"] = done["rss_mib"]
        row["test"][f"{src}-{tgt}"] = scores
    tgt = args.speed_direction.split("-")[1]
    for threads in args.threads:
        for batch in args.batch_sizes:
            for beam in args.beams:
                key = f"t{threads}.b{batch}.beam{beam}"
                done = measure_speed(info, args, mdir, speed_data, pieces, threads, batch, beam)
                entry = {k: v for k, v in done.items() if k not in ("version", "output")}
                anchor_out = adir / f"speed.{key}.{tgt}"
                entry["fidelity"] = (fidelity(read_lines(done["output"]), read_lines(anchor_out))
                                     if anchor_out.exists() else None)
                row["speed"][key] = entry
    runs = [t["peak_rss_mib"] for t in row["test"].values()] + [s["rss_mib"] for s in row["speed"].values()]
    row["peak_rss_mib"] = max(runs)
    bleus = [row["test"][f"{s}-{t}"]["bleu"] for s, t in DIRECTIONS]
    chrfs = [row["test"][f"{s}-{t}"]["chrf"] for s, t in DIRECTIONS]
    fids = [row["test"][f"{s}-{t}"]["fidelity"] for s, t in DIRECTIONS]
    row["bleu_mean"] = round(sum(bleus) / 2, 2)
    row["chrf_mean"] = round(sum(chrfs) / 2, 2)
    row["fidelity"] = round(sum(fids) / 2, 2) if None not in fids else None
    return row


# ---------------------------------------------------------------------------------------------
# ratios, targets, Pareto


def speed_at(row, batch, beam, threads):
    entry = row["speed"].get(f"t{threads}.b{batch}.beam{beam}")
    return entry["tokens_per_s"] if entry else None


def add_ratios(rows, args):
    anchor = rows[ANCHOR]
    for row in rows.values():
        ratios = {}
        for threads in sorted(args.threads, reverse=True):  # the most threads: the unprefixed keys
            for beam in (1, 4):
                mine, base = speed_at(row, SPEED_BATCH, beam, threads), speed_at(anchor, SPEED_BATCH, beam, threads)
                label = "greedy" if beam == 1 else f"beam{beam}"
                value = round(mine / base, 3) if mine and base else None
                ratios[f"speed_t{threads}_b{SPEED_BATCH}_{label}"] = value
                if threads == max(args.threads):
                    ratios[f"speed_b{SPEED_BATCH}_{label}"] = value
        ratios["size"] = round(anchor["size_mb"] / row["size_mb"], 3)  # > 1: smaller than the anchor
        ratios["weights"] = round(anchor["weights_mb"] / row["weights_mb"], 3)
        ratios["bleu_loss"] = round(anchor["bleu_mean"] - row["bleu_mean"], 2)
        row["ratios"] = ratios


def pareto(rows, args):
    """Variants not dominated on (size: smaller, tokens/s at batch 32 greedy with the most threads:
    higher, mean BLEU: higher); a variant without that speed figure is left out, and so is the
    ``dense-ft`` control (more training, not a compression)."""
    threads = max(args.threads)
    points = {n: (r["size_mb"], speed_at(r, SPEED_BATCH, 1, threads), r["bleu_mean"]) for n, r in rows.items()
              if r["kind"] != "dense-ft"}
    points = {n: p for n, p in points.items() if p[1] is not None}

    def dominates(a, b):
        return a[0] <= b[0] and a[1] >= b[1] and a[2] >= b[2] and a != b

    return sorted(n for n, p in points.items() if not any(dominates(q, p) for m, q in points.items() if m != n))


def times(value):
    return "not measured" if value is None else f"{value}x"


def targets(rows, args):
    """Issue 22's targets, met / not met / not measured, from the figures (the four int8 ones for
    ct2-int8, and for ct2-int8_float16 too when it was measured)."""
    out = []
    threads = max(args.threads)

    def add(name, met, detail):
        out.append({"target": name, "status": "not measured" if met is None else ("met" if met else "not met"),
                    "detail": detail})

    for name in INT8_CT2[:1] + tuple(n for n in INT8_CT2[1:] if n in rows):
        int8 = rows.get(name)
        if not int8:
            for what in ("speed", "fidelity", "BLEU loss", "size"):
                add(f"{name} {what}", None, f"{name} not in --variants")
            continue
        r = int8["ratios"]
        # at every thread count measured: each engine given the same cores, greedy and beam 4
        cells = [(t, k, r.get(f"speed_t{t}_b{SPEED_BATCH}_{k}")) for t in sorted(args.threads)
                 for k in ("greedy", "beam4")]
        speeds = [v for _, _, v in cells if v is not None]
        add(f"{name} >= 5x fairseq-generate fp32 tokens/s at batch {SPEED_BATCH}",
            min(speeds) >= 5 if len(speeds) == len(cells) else None,
            "; ".join(f"{t} thread{'s' if t > 1 else ''} {k.replace('beam4', 'beam 4')} {times(v)}" for t, k, v in cells)
            + f" (CTranslate2 with more than one thread: --ct2-layout {args.ct2_layout})")
        add(f"{name} fidelity >= 90", int8["fidelity"] >= 90 if int8["fidelity"] is not None else None,
            f"{int8['fidelity']}")
        add(f"{name} loses <= 0.3 BLEU", r["bleu_loss"] <= 0.3, f"{r['bleu_loss']:+.2f} BLEU lost (mean of both ways)")
        add(f"{name} >= 3.5x smaller on disk", r["size"] >= 3.5,
            f"{r['size']}x (what translating raw text needs on both sides: the checkpoint with dict.txt and "
            f"spm.model, the CTranslate2 directory); the weights alone {r['weights']}x (the checkpoint, "
            "model.bin)")
    control = rows.get("dense-ft")

    def against_control(r):
        """The BLEU lost against dense-ft, for a variant fine-tuned once with the same flags."""
        once = r["kind"] != "prune" or Path(r.get("round_dir", "")).name == "round1"
        if not (control and r.get("fine_tuned") and once and r.get("train_flags") == control.get("train_flags")):
            return ""
        return (f"; {control['bleu_mean'] - r['bleu_mean']:+.2f} against dense-ft (the checkpoint fine-tuned "
                f"unpruned with the same flags, decoded in fp32)")

    half = rows.get("prune-0.5")
    add("50% magnitude pruning with rewinding within 0.5 BLEU", half["ratios"]["bleu_loss"] <= 0.5 if half else None,
        f"{half['ratios']['bleu_loss']:+.2f} BLEU lost{against_control(half)}" if half else "prune-0.5 not measured")
    pruned = sorted((r["sparsity_target"], r["ratios"]["bleu_loss"]) for r in rows.values() if r["kind"] == "prune")
    first = next((s for s, loss in pruned if loss >= 1), None)
    out.append({"target": "first sparsity losing 1 BLEU", "status": "measured" if pruned else "not measured",
                "detail": (f"{first}" if first is not None else f"none of {[s for s, _ in pruned]}") if pruned else
                "no prune-S variant measured", "value": first})
    int8 = rows.get("ct2-int8")  # (the structured and low-rank models are exported to it)
    base = speed_at(int8, SPEED_BATCH, 1, threads) if int8 else None
    candidates = [r for r in rows.values() if r["kind"] in ("structured", "lowrank")]
    winners = [r["variant"] for r in candidates if base and speed_at(r, SPEED_BATCH, 1, threads)
               and speed_at(r, SPEED_BATCH, 1, threads) > base and r["ratios"]["bleu_loss"] <= 1]
    add("a structured or low-rank model faster in CTranslate2 (int8, than ct2-int8) at <= 1 BLEU loss",
        bool(winners) if candidates and base else None,
        (f"met by {', '.join(winners)}; " if winners else "") + ("; ".join(
            f"{r['variant']}: {speed_at(r, SPEED_BATCH, 1, threads)} vs {base} tokens/s, "
            f"{r['ratios']['bleu_loss']:+.2f} BLEU lost{against_control(r)}" for r in candidates) or "none measured"))
    return out


# ---------------------------------------------------------------------------------------------
# output


def print_table(rows, args, front, goals):
    threads = max(args.threads)
    grid = [(t, b, beam) for t in args.threads for b in args.batch_sizes for beam in args.beams]
    head = ["variant", "params", "non-zero", "MB", "weights MB", "RSS MiB", "BLEU en-fr", "fr-en", "chrF en-fr", "fr-en",
            "fidelity"] + [f"tok/s t{t} b{b} beam{beam}" for t, b, beam in grid] + [
            f"x speed b{SPEED_BATCH} greedy", f"x speed b{SPEED_BATCH} beam4", "x smaller", "x smaller weights", "BLEU loss"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, r in rows.items():
        t = r["test"]
        cells = [name + (" *" if name in front else ""), f"{r['params']:,}", f"{r['params_nonzero']:,}",
                 f"{r['size_mb']:.2f}", f"{r['weights_mb']:.2f}", f"{r['peak_rss_mib']:.0f}", f"{t['en-fr']['bleu']:.2f}",
                 f"{t['fr-en']['bleu']:.2f}", f"{t['en-fr']['chrf']:.2f}", f"{t['fr-en']['chrf']:.2f}",
                 "–" if r["fidelity"] is None else f"{r['fidelity']:.2f}"]
        cells += [str(speed_at(r, b, beam, th)) for th, b, beam in grid]
        q = r["ratios"]
        cells += [str(q[f"speed_b{SPEED_BATCH}_greedy"]), str(q[f"speed_b{SPEED_BATCH}_beam4"]), str(q["size"]),
                  str(q["weights"]), f"{q['bleu_loss']:+.2f}"]
        print("| " + " | ".join(cells) + " |")
    print(f"\n* Pareto frontier on (size, tokens/s at batch {SPEED_BATCH} greedy with {threads} threads, mean BLEU): "
          + ", ".join(front))
    print("\nTargets (issue 22):")
    for g in goals:
        print(f"  {g['status']:>12}: {g['target']} -- {g['detail']}")


def plot(series, threads, path: Path):
    """Four panels: mean BLEU (top) and fidelity to the fp32 output (bottom) against size on disk
    (left) and tokens/s at batch 32 greedy with ``threads`` threads (right), both axes of x
    logarithmic; stars are the Pareto frontier (as each record computed it, at its own most
    threads), hollow circles the other variants, each point named. ``series``: (model, variant rows,
    Pareto frontier) of each record drawn, one colour each."""
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # before the import: it logs while importing
    import matplotlib
    import matplotlib.lines
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = (("size on disk (MB)", lambda r: r["size_mb"]),
          (f"target tokens/s, batch {SPEED_BATCH}, greedy, {threads} thread{'s' if threads > 1 else ''}",
           lambda r: speed_at(r, SPEED_BATCH, 1, threads)))
    ys = (("test BLEU, mean of both ways", lambda r: r["bleu_mean"]),
          ("fidelity: BLEU against the fp32 output", lambda r: r["fidelity"]))
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for row, (ylabel, yof) in enumerate(ys):
        for col, (xlabel, xof) in enumerate(xs):
            ax = axes[row][col]
            for colour, (model, rows, front) in enumerate(series):
                points = [(name, xof(r), yof(r)) for name, r in rows.items() if xof(r) and yof(r) is not None]
                for i, (name, x, y) in enumerate(sorted(points, key=lambda p: (p[1], p[2]))):
                    if name in front:
                        ax.scatter([x], [y], marker="*", s=140, color=f"C{colour}", zorder=3)
                    else:  # hollow, drawn above the stars: a point under a frontier variant stays visible
                        ax.scatter([x], [y], marker="o", s=50, facecolors="none", edgecolors=f"C{colour}",
                                   linewidths=1.5, zorder=4)
                    ax.annotate(name, (x, y), fontsize=7, xytext=(4, 6 if i % 2 == 0 else -10),
                                textcoords="offset points", color=f"C{colour}")
            if row == 0 and col == 0:
                ax.legend(handles=[matplotlib.lines.Line2D([], [], marker="*", linestyle="", markersize=11,
                                                           color=f"C{colour}", label=model)
                                   for colour, (model, _, _) in enumerate(series)], fontsize=8)
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3, which="both")
    fig.suptitle("Compression variants against fairseq-generate fp32 (stars: each model's Pareto frontier on "
                 "size, speed and BLEU)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_metadata():
    try:
        dirty = bool(subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, check=True).stdout.strip())
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        dirty = commit = None
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {**provenance(), "git_commit": commit, "worktree_modified": dirty, "load_avg_before": load,
            "mkl_num_threads": os.environ.get("MKL_NUM_THREADS")}


# ---------------------------------------------------------------------------------------------


def int_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--work", type=Path, help="directory of the variants and measurements (required)")
    p.add_argument("--checkpoint", type=Path, help="the trained smallcap_transformer checkpoint (required)")
    p.add_argument("--data", type=Path, help="its data directory (smallcap-prepare --multi30k) (required)")
    p.add_argument("--variants", default=None,
                   help="comma-separated variants (default: " + ",".join(FIXED + DEFAULT_LOWRANK + DEFAULT_STRUCTURED)
                   + " and prune-S for each --prune-sparsities when --prune-train-flags is given, and dense-ft "
                   "when it or --structured-train-flags is)")
    p.add_argument("--prune-sparsities", default="0.5,0.8")
    p.add_argument("--prune-train-flags", default=None,
                   help="fairseq-train flags of each pruning round (after DATA; not --save-dir/--finetune-from-model)")
    p.add_argument("--lowrank-layers", default=".*", help="smallcap-lowrank --layers")
    p.add_argument("--lowrank-train-flags", default=None,
                   help="fine-tune the factorised model with these fairseq-train flags before merging")
    p.add_argument("--structured-train-flags", default=None,
                   help="fine-tune each structured-pruned model with these fairseq-train flags (after DATA; its "
                        "shapes are added) before the export")
    p.add_argument("--speed-sentences", type=int, default=500, help="first N test sentences of the speed runs")
    p.add_argument("--speed-direction", default="en-fr")
    p.add_argument("--threads", type=int_list, default=[1, 2], help="thread counts of the speed grid")
    p.add_argument("--min-speed-seconds", type=float, default=2.0,
                   help="repeat a speed run until its decoding has taken this long in all (at most 10 runs; "
                        "the median run is kept)")
    p.add_argument("--ct2-layout", choices=["inter", "intra"], default="inter",
                   help="how CTranslate2 variants spend more than one thread: parallel batches of one "
                        "thread each (inter) or one batch on all threads (intra)")
    p.add_argument("--batch-sizes", type=int_list, default=[1, 32], help="batch sizes of the speed grid")
    p.add_argument("--beams", type=int_list, default=[1, 4], help="beam sizes of the speed grid (1: greedy)")
    p.add_argument("--quality-beam", type=int, default=4, help="beam of the test-set BLEU / fidelity decoding")
    p.add_argument("--quality-batch-size", type=int, default=32)
    p.add_argument("--test-lines", type=int, default=None, help="score only the first N test sentences")
    p.add_argument("--max-len-b", type=int, default=200, help="longest output in pieces (fairseq's --max-len-b)")
    p.add_argument("--force-measure", action="store_true", help="measure again what was measured")
    p.add_argument("--rebuild", action="store_true", help="rebuild the variants' descriptions (not their files)")
    p.add_argument("--results-log", type=Path, default=None, help="append the record to this JSON-lines ledger")
    p.add_argument("--plot", type=Path, default=None, help="write the figure here (needs matplotlib)")
    p.add_argument("--plot-only", type=Path, default=None, metavar="LEDGER",
                   help="run nothing: draw --plot from the newest record of this JSON-lines ledger")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.measured_now = {}  # variant -> speed runs measured by this invocation (--force-measure)
    try:
        return _main(args)
    except BenchError as error:
        print(f"compression.py: error: {error}", file=sys.stderr)
        return 2


def record_arch(record) -> str:
    """The model a compression record measured: its ``setup.arch``; for records made before that was
    kept, the ``ARCH`` directory of curation_ablation.py's layout (``WORK/ARCH/seedN/...``) in the
    checkpoint's path, else "–"."""
    setup = record.get("setup") or {}
    if setup.get("arch"):
        return setup["arch"]
    parts = Path(str(setup.get("checkpoint", ""))).parts
    return next((part for part, after in zip(parts, parts[1:]) if after.startswith("seed")), "–")


def newest_by_arch(records) -> dict:
    """{model: its newest record} of compression records (oldest first), in the order the models first
    appear."""
    newest = {}
    for record in records:
        newest[record_arch(record)] = record
    return newest


def plot_from_ledger(ledger: Path, path: Path):
    """Draw the newest record of each model in ``ledger`` in one figure (a run with --plot draws its
    own record alone); the speed axis at the most threads every one of them measured."""
    try:
        newest = newest_by_arch(json.loads(line) for line in ledger.read_text(encoding="utf-8").splitlines()
                                if line.strip())
        if not newest:
            raise ValueError("no records")
        series = [(model, r["figures"]["variants"], r["figures"]["pareto"]) for model, r in newest.items()]
        shared = set.intersection(*(set((r.get("setup") or {}).get("threads") or [1]) for r in newest.values()))
        if not shared:
            raise ValueError(f"the newest records of {', '.join(newest)} share no thread count of their speed grids")
        threads = max(shared)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise BenchError(f"--plot-only {ledger}: no compression record to draw ({type(e).__name__}: {e})")
    plot(series, threads, path)
    print(f"plot: {path} (" + "; ".join(f"{model}: record of {r.get('date', '?')}, {str(r.get('git_commit') or '?')[:7]}"
                                       for model, r in newest.items()) + ")")
    return 0


def _main(args):
    if args.plot_only:
        if not args.plot:
            raise BenchError("--plot-only needs --plot FILE")
        return plot_from_ledger(args.plot_only, args.plot)
    missing = [f"--{name}" for name in ("work", "checkpoint", "data") if getattr(args, name) is None]
    if missing:
        raise BenchError(f"{', '.join(missing)} required (unless --plot-only)")
    meta = run_metadata()  # before anything runs: the load average of the machine as found
    args.work = args.work.resolve()
    args.data = args.data.resolve()
    args.checkpoint = args.checkpoint.resolve()
    try:
        args.prune_sparsities = sorted({float(s) for s in args.prune_sparsities.split(",") if s.strip()})
    except ValueError:
        raise BenchError(f"--prune-sparsities {args.prune_sparsities!r}: not comma-separated numbers")
    if not args.checkpoint.is_file():
        raise BenchError(f"checkpoint not found: {args.checkpoint}")
    if not (args.data / "dict.txt").is_file() or not (args.data / "raw").is_dir():
        raise BenchError(f"{args.data}: not a data directory of smallcap-prepare (dict.txt, raw/)")
    if args.variants:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    else:
        variants = FIXED + DEFAULT_LOWRANK + DEFAULT_STRUCTURED + (
            [f"prune-{s:g}" for s in args.prune_sparsities] if args.prune_train_flags else []) + (
            ["dense-ft"] if dense_ft_flags(args) else [])
    for v in variants:
        variant_kind(v)
    skipped = {}
    for v in variants:
        flags, why = FINE_TUNED.get(variant_kind(v), (None, None))
        if why and not flags(args):
            skipped[v] = why
    variants = [v for v in variants if v not in skipped]
    variants = [ANCHOR] + [v for v in variants if v != ANCHOR]  # the anchor is always measured, first
    args.work.mkdir(parents=True, exist_ok=True)

    test_data = subset_data(args.data, args.work / "data" / f"test{args.test_lines}", args.test_lines)
    speed_data = subset_data(args.data, args.work / "data" / f"test{args.speed_sentences}", args.speed_sentences)
    pieces = Pieces(args.data)
    rows = {}
    for name in variants:
        print(f"[{name}] building", file=sys.stderr, flush=True)
        info = add_sizes(build_variant(name, args, args.work), args.data)
        print(f"[{name}] measuring", file=sys.stderr, flush=True)
        rows[name] = measure_variant(info, args, args.work, test_data, speed_data, pieces)
    add_ratios(rows, args)
    front = pareto(rows, args)
    goals = targets(rows, args)
    print_table(rows, args, front, goals)
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    record = {
        "figures": {"variants": rows, "pareto": front, "targets": goals, "skipped": skipped},
        "setup": {"checkpoint": str(args.checkpoint), "arch": checkpoint_arch(args.checkpoint),
                  "data": str(args.data), "test_lines": args.test_lines,
                  "speed_sentences": args.speed_sentences, "speed_direction": args.speed_direction,
                  "threads": args.threads, "ct2_layout": args.ct2_layout,
                  "min_speed_seconds": args.min_speed_seconds, "batch_sizes": args.batch_sizes, "beams": args.beams,
                  "quality_beam": args.quality_beam, "quality_batch_size": args.quality_batch_size,
                  "max_len_b": args.max_len_b, "prune_train_flags": args.prune_train_flags,
                  "lowrank_train_flags": args.lowrank_train_flags, "lowrank_layers": args.lowrank_layers,
                  "structured_train_flags": args.structured_train_flags,
                  "token_count": "sentencepiece pieces of the detokenized output (data's spm.model), no </s>",
                  "pareto_axes": f"size_mb (min), tokens/s batch {SPEED_BATCH} greedy {max(args.threads)} threads "
                                 "(max), bleu_mean (max)"},
        **meta,
    }
    write_json(args.work / "record.json", record)
    if args.results_log:
        args.results_log.parent.mkdir(parents=True, exist_ok=True)
        with open(args.results_log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    if args.plot:
        plot([(record_arch(record), rows, front)], max(args.threads), args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
