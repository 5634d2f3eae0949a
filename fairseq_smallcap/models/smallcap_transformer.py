"""The four model sizes of Table 1 of the "unlocking the capacity of small models" study.

They are MASS-style Transformer encoder-decoders (Song et al. 2019, "MASS: Masked Sequence to
Sequence Pre-training for Language Generation"): a 6-layer decoder, FFN 4 x dim, GELU, dropout
0.1, learned positions up to 512, separate encoder and decoder embedding tables and tied decoder
input/output embeddings. Only the encoder depth, the width and the number of heads change:

    size        vocab  dim   enc. layers  heads  params (Table 1)
    very small  55k    128   1            1      15.5M
    small       65k    256   2            2      41.5M
    medium      55k    420   4            3      70.7M
    large       65k    1024  6            8      314.3M

Every option stays overridable from the command line as with any fairseq architecture
(``--arch smallcap_small --share-all-embeddings --dropout 0.2`` ...).
"""
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel, base_architecture

from .. import clean_exit
from ..errors import DictionaryMismatchError, reported  # noqa: F401  (DictionaryMismatchError: raised here)
from .pretrained_embeddings import init_embeddings, task_dict_path
from ..compression.lowrank import add_low_rank_args, apply_low_rank_args  # low-rank factorisation options
from ..compression import pruning  # magnitude / structured pruning options

# encoder layers, width, heads of Table 1
TABLE1_SIZES = {
    "smallcap_very_small": dict(layers=1, dim=128, heads=1, vocab=52104, params=15.5e6),
    "smallcap_small": dict(layers=2, dim=256, heads=2, vocab=64139, params=41.5e6),
    "smallcap_medium": dict(layers=4, dim=420, heads=3, vocab=52104, params=70.7e6),
    "smallcap_large": dict(layers=6, dim=1024, heads=8, vocab=64139, params=314.3e6),
}


def check_vocabulary(model, state_dict) -> None:
    """Raise :class:`DictionaryMismatchError` (one clear line) when a checkpoint's token
    embeddings do not match the dictionary the task built ``model`` with, instead of a tensor
    size mismatch deep inside ``load_state_dict``."""
    for side in ("encoder", "decoder"):
        key = f"{side}.embed_tokens.weight"
        if key in state_dict:
            expected = getattr(model, side).embed_tokens.weight.size(0)
            found = state_dict[key].size(0)
            if found != expected:
                raise DictionaryMismatchError(
                    f"mismatched dictionary: the checkpoint's {side} has {found} token "
                    f"embeddings but the task's dictionary has {expected} symbols "
                    "(dict.txt of the data directory plus <mask> and one __lang__ token "
                    "per language). Use the data directory (and --mono-langs) the model "
                    "was trained with."
                )


@register_model("smallcap_transformer")
class SmallcapTransformerModel(TransformerModel):
    """fairseq's Transformer, with a clear error when a checkpoint's vocabulary differs from the
    task's dictionary, and ``--init-embeddings``: skip-gram subword embeddings
    (``smallcap-embeddings``) as the initial encoder and decoder embedding tables."""

    @staticmethod
    def add_args(parser):
        TransformerModel.add_args(parser)
        parser.add_argument("--init-embeddings", metavar="FILE", default=None,
                            help="initialise the encoder and decoder embeddings (and so the tied "
                                 "output projection) with the vectors of FILE, made by "
                                 "smallcap-embeddings for the data's dict.txt, rescaled to the "
                                 "std dim**-0.5 of fairseq's initialisation; ignored when "
                                 "building a model to load a checkpoint into")
        add_low_rank_args(parser)
        pruning.add_pruning_args(parser, attention_heads=True)  # --prune-*, --*-heads-kept

    @classmethod
    @reported
    def build_model(cls, args, task):
        clean_exit.install()  # with fairseq's own tasks too: a run stopped mid-epoch exits 0
        model = super().build_model(args, task)
        path = getattr(args, "init_embeddings", None)
        if path:
            init_embeddings(path, task.source_dictionary, task_dict_path(task),
                            [("encoder", model.encoder.embed_tokens),
                             ("decoder", model.decoder.embed_tokens)],
                            target_std=lambda dim: dim ** -0.5)
        apply_low_rank_args(model, args)  # --low-rank-*: factorised Linear layers / embeddings
        pruning.prepare_model(model, args)  # --prune-*: weight_orig/weight_mask; --*-heads-kept
        return model

    def set_num_updates(self, num_updates):
        super().set_num_updates(num_updates)
        pruning.on_update(self, num_updates)  # --prune-*: the sparsity schedule

    @reported
    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        check_vocabulary(self, state_dict)
        pruning.adapt_state_dict(self, state_dict)  # masks: dense <-> pruned checkpoints
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)


def _table1_architecture(args, layers: int, dim: int, heads: int) -> None:
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", dim)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 4 * dim)
    args.encoder_layers = getattr(args, "encoder_layers", layers)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", heads)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", dim)
    args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", 4 * dim)
    args.decoder_layers = getattr(args, "decoder_layers", 6)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", heads)
    args.activation_fn = getattr(args, "activation_fn", "gelu")
    args.dropout = getattr(args, "dropout", 0.1)
    args.attention_dropout = getattr(args, "attention_dropout", 0.1)
    args.encoder_learned_pos = getattr(args, "encoder_learned_pos", True)
    args.decoder_learned_pos = getattr(args, "decoder_learned_pos", True)
    args.max_source_positions = getattr(args, "max_source_positions", 512)
    args.max_target_positions = getattr(args, "max_target_positions", 512)
    args.share_decoder_input_output_embed = getattr(args, "share_decoder_input_output_embed", True)
    args.share_all_embeddings = getattr(args, "share_all_embeddings", False)
    args.layernorm_embedding = getattr(args, "layernorm_embedding", True)
    base_architecture(args)


@register_model_architecture("smallcap_transformer", "smallcap_transformer")
def smallcap_transformer(args):
    """The model's default architecture: the very small size."""
    size = TABLE1_SIZES["smallcap_very_small"]
    _table1_architecture(args, size["layers"], size["dim"], size["heads"])


def _register_table1_size(arch: str) -> None:
    size = TABLE1_SIZES[arch]

    def architecture(args):
        _table1_architecture(args, size["layers"], size["dim"], size["heads"])

    architecture.__name__ = arch
    register_model_architecture("smallcap_transformer", arch)(architecture)


for _arch in TABLE1_SIZES:
    _register_table1_size(_arch)
