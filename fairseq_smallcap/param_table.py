"""Print the parameter counts of the four Table 1 sizes at the study's vocabulary sizes.

    smallcap-param-table            # Table 1 vocabularies (52,104 and 64,139 symbols)
    smallcap-param-table --vocab 8003   # e.g. the Multi30k sentencepiece vocabulary

Counts are measured on models built by fairseq from the registered architectures, with the
embedding tables sized to the given dictionary.
"""
import argparse
from argparse import Namespace
from typing import Dict, Optional

from fairseq.data import Dictionary
from fairseq.models import ARCH_MODEL_REGISTRY, ARCH_CONFIG_REGISTRY

from .models.smallcap_transformer import TABLE1_SIZES


class _DictionaryOnlyTask:
    """What fairseq's Transformer needs from a task to be built: its dictionaries."""

    def __init__(self, vocab_size: int):
        dictionary = Dictionary()
        for i in range(vocab_size - len(dictionary)):
            dictionary.add_symbol(f"tok{i}")
        self.source_dictionary = self.target_dictionary = dictionary


def arch_args(arch: str, overrides: Optional[Dict] = None) -> Namespace:
    """The model options ``--arch arch`` sets, given the ``overrides`` on the command line."""
    args = Namespace(**(overrides or {}))
    ARCH_CONFIG_REGISTRY[arch](args)
    return args


def count_parameters(arch: str, vocab_size: int, overrides: Optional[Dict] = None) -> int:
    """Parameters of ``arch`` with a vocabulary of ``vocab_size`` symbols (tied tensors once)."""
    model = ARCH_MODEL_REGISTRY[arch].build_model(arch_args(arch, overrides), _DictionaryOnlyTask(vocab_size))
    return sum(p.numel() for p in model.parameters())


def table(vocab_size: Optional[int] = None):
    rows = []
    for arch, size in TABLE1_SIZES.items():
        vocab = vocab_size or size["vocab"]
        params = count_parameters(arch, vocab)
        rows.append((arch, vocab, size["dim"], size["layers"], size["heads"], params, size["params"]))
    return rows


def cli_main(argv=None):
    parser = argparse.ArgumentParser(prog="smallcap-param-table", description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=None,
                        help="dictionary size for every model (default: Table 1's, per size)")
    args = parser.parse_args(argv)
    import fairseq_smallcap  # noqa: F401  (registers the architectures)

    print(f"{'arch':<22}{'vocab':>8}{'dim':>6}{'enc':>5}{'heads':>7}{'params':>14}{'Table 1':>10}{'ratio':>8}")
    for arch, vocab, dim, layers, heads, params, published in table(args.vocab):
        ratio = f"{params / published:.3f}" if args.vocab is None else "-"
        print(f"{arch:<22}{vocab:>8}{dim:>6}{layers:>5}{heads:>7}{params:>14,}{published / 1e6:>9.1f}M{ratio:>8}")


if __name__ == "__main__":
    cli_main()
