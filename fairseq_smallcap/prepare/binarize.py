"""Step 4: binarize with fairseq-preprocess (subprocesses) and check the ``.idx`` files."""
import re
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence, Tuple

import numpy as np

from .common import HELDOUT_SPLIT, PrepareError, logger
from .spm import EncodedFile


def run_fairseq_preprocess(args: Sequence[str], what: str) -> None:
    """Run ``python -m fairseq_cli.preprocess ARGS``; raise :class:`PrepareError` on failure."""
    cmd = [sys.executable, "-m", "fairseq_cli.preprocess", *args]
    logger.info(f"binarizing {what}: fairseq-preprocess {' '.join(args)}")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-15:])
        raise PrepareError(
            f"fairseq-preprocess failed for {what} (exit status {proc.returncode}); "
            f"command: {' '.join(cmd)}\n{tail}"
        )
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.search(r"(\[[^\]]*\] .*: \d+ sents, .*)$", line)
        if m:
            logger.info(f"fairseq-preprocess: {m.group(1)}")


def read_mmap_sizes(prefix: Path) -> np.ndarray:
    """Sentence sizes of the fairseq mmap dataset ``prefix``, read with fairseq's own reader."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    if not MMapIndexedDataset.exists(str(prefix)):
        raise PrepareError(f"fairseq-preprocess did not write {prefix}.idx and {prefix}.bin")
    dataset = MMapIndexedDataset(str(prefix))
    sizes = np.array(dataset.sizes, copy=True)  # a copy: the sizes live in the dataset's mmap
    bin_path = Path(f"{prefix}.bin")
    expected_bytes = int(sizes.sum(dtype=np.int64)) * np.dtype(dataset._index.dtype).itemsize
    if bin_path.stat().st_size != expected_bytes:
        raise PrepareError(f"{bin_path}: {bin_path.stat().st_size} bytes, the index says {expected_bytes}")
    return sizes


def verify_binarized(prefix: Path, encoded: EncodedFile, raw_path: Path) -> dict:
    """Check that ``prefix``.idx holds one sentence per line of ``raw_path``, of the right size."""
    sizes = read_mmap_sizes(prefix)
    expected = np.frombuffer(encoded.sizes.tobytes(), dtype=np.int32)
    if len(sizes) != len(expected):
        raise PrepareError(
            f"{prefix}.idx has {len(sizes)} sentences but {raw_path} has {len(expected)} lines"
        )
    if not np.array_equal(sizes, expected):
        line = int(np.nonzero(sizes != expected)[0][0]) + 1
        raise PrepareError(
            f"{prefix}.idx: sentence {line} has {sizes[line - 1]} tokens, expected "
            f"{expected[line - 1]} (line {line} of {raw_path})"
        )
    return {"sentences": int(len(sizes)), "tokens": int(sizes.sum(dtype=np.int64)), "unk": encoded.unk}


def binarize_all(
    dest: Path,
    langs: Sequence[str],
    splits: Sequence[str],
    encoded: Mapping[Tuple[str, str], EncodedFile],
    workers: int,
    heldout_langs: Sequence[str] = (),
) -> dict:
    """Step 4: binarize with fairseq-preprocess, then check every .idx against the input lines.

    Monolingual data: one ``--only-source`` run per language into ``dest/{lang}/`` (with the
    held-out sentences of ``heldout_langs`` as its ``valid`` split).
    Parallel data: one ``-s SRC -t TGT`` run with --validpref/--testpref only; no --trainpref
    is needed because both dictionaries are given (--srcdict and --tgtdict = dict.txt).
    """
    src, tgt = langs[0], langs[1]
    tmp_dir, dict_txt = dest / "tmp", str(dest / "dict.txt")
    common = ["--dataset-impl", "mmap", "--workers", str(workers)]
    binarized = {}
    for lang in langs:
        heldout_args = (["--validpref", str(tmp_dir / f"{HELDOUT_SPLIT}.{lang}")]
                        if lang in heldout_langs else [])
        run_fairseq_preprocess(
            ["--only-source", "--trainpref", str(tmp_dir / f"train.{lang}"), *heldout_args,
             "--destdir", str(dest / lang), "--srcdict", dict_txt, *common],
            f"{lang} monolingual training data" + (" and held-out sentences" if heldout_args else ""),
        )
        binarized[f"{lang}/train"] = verify_binarized(
            dest / lang / "train", encoded["train", lang], dest / "raw" / f"train.{lang}")
        if heldout_args:
            binarized[f"{lang}/valid"] = verify_binarized(
                dest / lang / "valid", encoded[HELDOUT_SPLIT, lang],
                dest / "raw" / f"{HELDOUT_SPLIT}.{lang}")
    args = ["-s", src, "-t", tgt, "--destdir", str(dest), "--srcdict", dict_txt, "--tgtdict", dict_txt]
    for split in splits:
        args += [f"--{split}pref", str(tmp_dir / split)]
    run_fairseq_preprocess(args + common, f"{src}-{tgt} {'/'.join(splits)} data")
    for split in splits:
        for lang in (src, tgt):
            name = f"{split}.{src}-{tgt}.{lang}"
            binarized[name] = verify_binarized(
                dest / name, encoded[split, lang], dest / "raw" / f"{split}.{lang}")
    for name, info in binarized.items():
        logger.info(f"checked {name}: {info['sentences']} sentences (= input lines), "
                    f"{info['tokens']} tokens with </s>, {info['unk']} <unk>")
    return binarized
