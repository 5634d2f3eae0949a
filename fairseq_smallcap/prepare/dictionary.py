"""Step 3: encode every raw file and write fairseq's joint ``dict.txt`` from the spm vocabulary."""
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .common import _WHITESPACE, HELDOUT_SPLIT, PrepareError, logger
from .spm import EncodedFile, encode_file

# fairseq.data.Dictionary puts these four symbols first; dict.txt must not repeat them.
FAIRSEQ_SPECIAL_SYMBOLS = ("<s>", "<pad>", "</s>", "<unk>")
FAIRSEQ_UNK = "<unk>"


def dictionary_piece_ids(sp) -> List[int]:
    """The spm ids that go into dict.txt: every piece except unknown and control pieces.

    Raises :class:`PrepareError` for a piece a fairseq dictionary cannot hold (one containing
    whitespace, or one of fairseq's own special symbols).
    """
    ids = []
    for i in range(sp.get_piece_size()):
        if sp.is_unknown(i) or sp.is_control(i):
            continue
        piece = sp.id_to_piece(i)
        if not piece or _WHITESPACE.search(piece):
            raise PrepareError(f"sentencepiece piece {piece!r} (id {i}) contains whitespace")
        if piece in FAIRSEQ_SPECIAL_SYMBOLS:
            raise PrepareError(
                f"sentencepiece piece {piece!r} (id {i}) collides with a fairseq special symbol"
            )
        ids.append(i)
    return ids


def write_fairseq_dict(sp, piece_ids: Sequence[int], counts: np.ndarray, path: Path) -> None:
    """Write ``piece count`` lines in spm vocabulary order (fairseq's dict.txt format)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i in piece_ids:
            f.write(f"{sp.id_to_piece(i)} {int(counts[i])}\n")


def encode_all(sp, dest: Path, langs: Sequence[str], splits: Sequence[str],
               heldout_langs: Sequence[str] = ()):
    """Step 3: encode all raw text into ``dest/tmp/`` and write ``dest/dict.txt``.

    Returns the spm ids in dict.txt and ``{(split, lang): EncodedFile}``.
    """
    src, tgt = langs[0], langs[1]
    piece_ids = dictionary_piece_ids(sp)
    id_to_token = [FAIRSEQ_UNK if sp.is_unknown(i) else sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    counts = np.zeros(sp.get_piece_size(), dtype=np.int64)
    jobs = [("train", lang, counts) for lang in langs]
    jobs += [(split, lang, None) for split in splits for lang in (src, tgt)]
    jobs += [(HELDOUT_SPLIT, lang, None) for lang in heldout_langs]
    encoded: Dict[Tuple[str, str], EncodedFile] = {}
    for split, lang, count_into in jobs:
        name = f"{split}.{lang}"
        enc = encode_file(sp, id_to_token, dest / "raw" / name, dest / "tmp" / name, count_into)
        if enc.no_pieces:
            logger.warning(f"[{lang}] {split}: {enc.no_pieces} lines encode to no pieces "
                           "(kept as empty sentences)")
        encoded[split, lang] = enc
    write_fairseq_dict(sp, piece_ids, counts, dest / "dict.txt")
    logger.info(f"wrote {dest / 'dict.txt'}: {len(piece_ids)} pieces "
                f"(sentencepiece vocabulary {sp.get_piece_size()})")
    return piece_ids, encoded
