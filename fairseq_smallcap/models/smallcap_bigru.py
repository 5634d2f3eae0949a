"""A recurrent student: bidirectional-GRU encoder, GRU decoder with attention (``smallcap_bigru``).

Why: the distillation write-up this project grew from tried exactly this student on BPE input
and got stuck on batched decoding (when to stop each sentence of a batch). Written as a fairseq
incremental decoder (cached state reordered by ``reorder_incremental_state``, encoder output by
``reorder_encoder_out``), it decodes like any other model: ``fairseq-generate``'s beam search
(:class:`SequenceGenerator` stops each sentence at its own eos) and the batched greedy decoding
of online back-translation (:func:`fairseq_smallcap.backtranslation.greedy_decode`).

Architecture (RNNsearch of Bahdanau et al. 2015, "Neural Machine Translation by Jointly Learning
to Align and Translate", with the attentional hidden state and input feeding of Luong et al.
2015, "Effective Approaches to Attention-based Neural Machine Translation"; GRU of Cho et al.
2014):

* encoder: embeddings, a bidirectional GRU; annotations ``h_j = [fwd_j; bwd_j]``;
* decoder start state ``s_0 = tanh(W_init [fwd_last; bwd_first])`` (one slice per layer);
* each step: ``s_t = GRU([E y_{t-1}; ~h_{t-1}], s_{t-1})`` (input feeding, optional),
  additive attention ``a_tj = softmax_j(v^T tanh(W_q s_t + W_k h_j))``, context
  ``c_t = sum_j a_tj h_j``, attentional state ``~h_t = tanh(W_c [c_t; s_t])``;
* output: ``~h_t`` projected to the embedding dimension and scored against the decoder
  embedding table (tied input/output embeddings); separate encoder and decoder tables unless
  ``--share-all-embeddings``; dropout 0.1 on embeddings, annotations and ``~h_t``.

Sources may be left-padded (fairseq's default ``--left-pad-source True``) or right-padded: the
encoder moves every row's tokens to the left, packs them (``pack_padded_sequence``), and moves
the annotations back to the input's positions, so a sentence's encoding does not depend on the
padding around it and attention weights line up with ``src_tokens`` (``--print-alignment``).

Sizes (defaults; every one overridable, e.g. ``--decoder-hidden-size 512``), with the measured
parameter counts at the 52,104-symbol vocabulary of Table 1 (``smallcap_very_small``: a
Transformer, d=128, 1 encoder and 6 decoder layers)::

    embeddings 128, encoder 1 x biGRU 256 per direction, decoder 1 x GRU 256, attention 256
    smallcap_bigru       14,982,784 parameters (13,338,624 in the two embedding tables)
    smallcap_very_small  15,256,448 parameters (ratio 0.982)

The decoder's length cap (``max_decoder_positions``) is the task's ``--max-target-positions``
(1024 without one); the recurrence itself has no position limit.
"""
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq import utils
from fairseq.models import (
    FairseqEncoder,
    FairseqEncoderDecoderModel,
    FairseqIncrementalDecoder,
    register_model,
    register_model_architecture,
)
from fairseq.models.lstm import Embedding, Linear
from fairseq.modules import FairseqDropout
from torch import Tensor

from .. import clean_exit
from ..errors import SmallcapError, reported
from .pretrained_embeddings import init_embeddings, task_dict_path
from .smallcap_transformer import check_vocabulary
from ..compression import pruning  # magnitude pruning options

DEFAULT_MAX_POSITIONS = 1024

EncoderOut = Dict[str, Tensor]
IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]


def roll_rows(x: Tensor, shifts: Tensor) -> Tensor:
    """Rotate every row of ``x`` (B x T [x C]) left by ``shifts[b]`` positions along T."""
    positions = torch.arange(x.size(1), device=x.device)
    index = (positions.unsqueeze(0) + shifts.unsqueeze(1)) % x.size(1)
    if x.dim() == 3:
        index = index.unsqueeze(-1).expand_as(x)
    return x.gather(1, index)


@register_model("smallcap_bigru")
class SmallcapBiGRUModel(FairseqEncoderDecoderModel):
    """Bidirectional-GRU encoder and attentional GRU decoder (see the module docstring)."""

    @staticmethod
    def add_args(parser):
        # fmt: off
        parser.add_argument("--dropout", type=float, metavar="D",
                            help="dropout on embeddings, encoder annotations, between stacked "
                                 "GRU layers and on the attentional state")
        parser.add_argument("--encoder-embed-dim", type=int, metavar="N",
                            help="encoder embedding dimension")
        parser.add_argument("--encoder-hidden-size", type=int, metavar="N",
                            help="encoder GRU hidden size per direction (annotations are twice this)")
        parser.add_argument("--encoder-layers", type=int, metavar="N",
                            help="number of bidirectional encoder GRU layers")
        parser.add_argument("--decoder-embed-dim", type=int, metavar="N",
                            help="decoder embedding dimension (also the tied output embedding)")
        parser.add_argument("--decoder-hidden-size", type=int, metavar="N",
                            help="decoder GRU hidden size")
        parser.add_argument("--decoder-layers", type=int, metavar="N",
                            help="number of stacked decoder GRU layers")
        parser.add_argument("--decoder-attention-dim", type=int, metavar="N",
                            help="hidden size of the additive attention (Bahdanau et al. 2015)")
        parser.add_argument("--decoder-input-feed", type=str, metavar="BOOL",
                            help="feed the previous attentional state to the decoder GRU "
                                 "(input feeding, Luong et al. 2015): True or False")
        parser.add_argument("--share-all-embeddings", action="store_true",
                            help="one embedding table for encoder, decoder and output "
                                 "(needs equal encoder and decoder embedding dims)")
        parser.add_argument("--init-embeddings", metavar="FILE", default=None,
                            help="initialise the encoder and decoder embeddings (and so the tied "
                                 "output embedding) with the vectors of FILE, made by "
                                 "smallcap-embeddings for the data's dict.txt, rescaled to the "
                                 "std 0.1/sqrt(3) of the uniform(-0.1, 0.1) initialisation; "
                                 "ignored when building a model to load a checkpoint into")
        pruning.add_pruning_args(parser)  # --prune-*
        # fmt: on

    @classmethod
    @reported
    def build_model(cls, args, task):
        clean_exit.install()  # with fairseq's own tasks too: a run stopped mid-epoch exits 0
        smallcap_bigru(args)  # default whatever the command line did not set
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        encoder_embed = Embedding(len(src_dict), args.encoder_embed_dim, src_dict.pad())
        if args.share_all_embeddings:
            if src_dict != tgt_dict or args.encoder_embed_dim != args.decoder_embed_dim:
                raise SmallcapError("--share-all-embeddings needs a joint dictionary and "
                                 "--encoder-embed-dim equal to --decoder-embed-dim")
            decoder_embed = encoder_embed
        else:
            decoder_embed = Embedding(len(tgt_dict), args.decoder_embed_dim, tgt_dict.pad())
        encoder = BiGRUEncoder(
            src_dict, encoder_embed, args.encoder_hidden_size, args.encoder_layers, args.dropout,
            max_source_positions=getattr(args, "max_source_positions", DEFAULT_MAX_POSITIONS),
        )
        decoder = AttentionGRUDecoder(
            tgt_dict, decoder_embed, args.decoder_hidden_size, args.decoder_layers,
            args.decoder_attention_dim, encoder.output_units,
            input_feed=utils.eval_bool(str(args.decoder_input_feed)), dropout=args.dropout,
            max_target_positions=getattr(args, "max_target_positions", DEFAULT_MAX_POSITIONS),
        )
        path = getattr(args, "init_embeddings", None)
        if path:
            init_embeddings(path, src_dict, task_dict_path(task),
                            [("encoder", encoder_embed), ("decoder", decoder_embed)],
                            target_std=lambda dim: 0.1 / 3 ** 0.5)
        return pruning.prepare_model(cls(encoder, decoder), args)  # --prune-*: weight_orig/weight_mask

    def set_num_updates(self, num_updates):
        super().set_num_updates(num_updates)
        pruning.on_update(self, num_updates)  # --prune-*: the sparsity schedule

    @reported
    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        """Report a checkpoint trained with another dictionary in one clear line."""
        check_vocabulary(self, state_dict)
        pruning.adapt_state_dict(self, state_dict)  # masks: dense <-> pruned checkpoints
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)


class BiGRUEncoder(FairseqEncoder):
    """Embeddings and a bidirectional GRU over packed (padding-free) sequences.

    Returns a dict of batch-first tensors: ``encoder_out`` (B x T x 2H, the annotations at the
    positions of ``src_tokens``, zeros at padding), ``encoder_padding_mask`` (B x T) and
    ``final_hidden`` (B x 2H: the last layer's forward state after the last token and backward
    state after the first token)."""

    def __init__(self, dictionary, embed_tokens, hidden_size, num_layers, dropout,
                 max_source_positions=DEFAULT_MAX_POSITIONS):
        super().__init__(dictionary)
        self.embed_tokens = embed_tokens
        self.padding_idx = embed_tokens.padding_idx
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.output_units = 2 * hidden_size
        self.max_source_positions = max_source_positions
        self.dropout_module = FairseqDropout(dropout, module_name=self.__class__.__name__)
        self.rnn = nn.GRU(embed_tokens.embedding_dim, hidden_size, num_layers=num_layers,
                          batch_first=True, bidirectional=True,
                          dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None, **unused) -> EncoderOut:
        # lengths and padding side are read from the tokens: left or right padding both work
        padding_mask = src_tokens.eq(self.padding_idx)
        bsz, seqlen = src_tokens.size()
        lengths = (~padding_mask).long().sum(dim=1)
        leading_pads = padding_mask.long().cumprod(dim=1).sum(dim=1)
        x = self.dropout_module(self.embed_tokens(roll_rows(src_tokens, leading_pads)))
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        packed_out, final = self.rnn(packed)
        x, _ = nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True, total_length=seqlen)
        x = self.dropout_module(roll_rows(x, -leading_pads))
        last_layer = final.view(self.num_layers, 2, bsz, self.hidden_size)[-1]
        return {
            "encoder_out": x,
            "encoder_padding_mask": padding_mask,
            "final_hidden": torch.cat([last_layer[0], last_layer[1]], dim=-1),
        }

    def reorder_encoder_out(self, encoder_out: EncoderOut, new_order: Tensor) -> EncoderOut:
        return {key: value.index_select(0, new_order) for key, value in encoder_out.items()}

    def max_positions(self):
        return self.max_source_positions


class AdditiveAttention(nn.Module):
    """``softmax_j(v^T tanh(W_q q + W_k h_j))`` (Bahdanau et al. 2015); the keys ``W_k h_j`` are
    computed once per sentence by :meth:`keys`."""

    def __init__(self, query_dim: int, value_dim: int, attention_dim: int):
        super().__init__()
        self.query_proj = Linear(query_dim, attention_dim, bias=False)
        self.key_proj = Linear(value_dim, attention_dim)
        self.score_proj = Linear(attention_dim, 1, bias=False)

    def keys(self, values: Tensor) -> Tensor:
        return self.key_proj(values)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, padding_mask: Tensor):
        scores = self.score_proj(torch.tanh(keys + self.query_proj(query).unsqueeze(1))).squeeze(-1)
        scores = scores.float().masked_fill(padding_mask, float("-inf"))
        weights = F.softmax(scores, dim=-1).type_as(values)  # B x S
        return torch.bmm(weights.unsqueeze(1), values).squeeze(1), weights


class AttentionGRUDecoder(FairseqIncrementalDecoder):
    """Stacked GRU cells with additive attention, input feeding and tied output embeddings.

    Teacher forcing and incremental decoding run the same per-step code, so step-by-step
    logits equal the full-sequence ones. The cached state (batch first, reordered by
    :meth:`reorder_incremental_state`) holds the GRU states, the input feed and the attention
    keys."""

    def __init__(self, dictionary, embed_tokens, hidden_size, num_layers, attention_dim,
                 encoder_output_units, input_feed=True, dropout=0.1,
                 max_target_positions=DEFAULT_MAX_POSITIONS):
        super().__init__(dictionary)
        self.embed_tokens = embed_tokens
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.input_feed = input_feed
        self.max_target_positions = max_target_positions
        self.need_attn = True
        self.dropout_module = FairseqDropout(dropout, module_name=self.__class__.__name__)
        embed_dim = embed_tokens.embedding_dim
        self.init_proj = Linear(encoder_output_units, num_layers * hidden_size)
        first_input = embed_dim + (hidden_size if input_feed else 0)
        self.layers = nn.ModuleList(
            [nn.GRUCell(first_input if i == 0 else hidden_size, hidden_size) for i in range(num_layers)])
        self.attention = AdditiveAttention(hidden_size, encoder_output_units, attention_dim)
        self.combine_proj = Linear(encoder_output_units + hidden_size, hidden_size)
        self.out_proj = Linear(hidden_size, embed_dim)

    def forward(self, prev_output_tokens, encoder_out: Optional[EncoderOut] = None,
                incremental_state: Optional[IncrementalState] = None, **unused):
        x, extra = self.extract_features(prev_output_tokens, encoder_out, incremental_state)
        return self.output_layer(x), extra

    def extract_features(self, prev_output_tokens, encoder_out: Optional[EncoderOut] = None,
                         incremental_state: Optional[IncrementalState] = None, **unused):
        assert encoder_out is not None, "the attention needs the encoder output"
        values, padding_mask = encoder_out["encoder_out"], encoder_out["encoder_padding_mask"]
        cached = self.get_incremental_state(incremental_state, "cached_state")
        if cached is not None:
            prev_output_tokens = prev_output_tokens[:, -1:]
            hidden, feed, keys = cached["hidden"], cached["input_feed"], cached["keys"]
        else:
            bsz = prev_output_tokens.size(0)
            hidden = torch.tanh(self.init_proj(encoder_out["final_hidden"]))
            hidden = hidden.view(bsz, self.num_layers, self.hidden_size)
            feed = values.new_zeros(bsz, self.hidden_size) if self.input_feed else None
            keys = self.attention.keys(values)
        assert hidden is not None and keys is not None

        embedded = self.dropout_module(self.embed_tokens(prev_output_tokens))
        states: List[Tensor] = [hidden[:, i] for i in range(self.num_layers)]
        outs, attns = [], []
        for t in range(embedded.size(1)):
            x = embedded[:, t] if feed is None else torch.cat([embedded[:, t], feed], dim=-1)
            for i, cell in enumerate(self.layers):
                states[i] = cell(x, states[i])
                x = self.dropout_module(states[i])
            context, weights = self.attention(states[-1], keys, values, padding_mask)
            out = self.dropout_module(torch.tanh(self.combine_proj(torch.cat([context, states[-1]], dim=-1))))
            if feed is not None:
                feed = out
            outs.append(out)
            attns.append(weights)

        self.set_incremental_state(incremental_state, "cached_state",
                                   {"hidden": torch.stack(states, dim=1), "input_feed": feed, "keys": keys})
        attn = torch.stack(attns, dim=1) if self.need_attn else None  # B x T x S
        return self.out_proj(torch.stack(outs, dim=1)), {"attn": [attn] if attn is not None else None}

    def output_layer(self, features):
        return F.linear(features, self.embed_tokens.weight)

    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor):
        cached = self.get_incremental_state(incremental_state, "cached_state")
        if cached is None:
            return
        reordered = {key: None if value is None else value.index_select(0, new_order)
                     for key, value in cached.items()}
        self.set_incremental_state(incremental_state, "cached_state", reordered)

    def max_positions(self):
        return self.max_target_positions

    def make_generation_fast_(self, need_attn=False, **kwargs):
        self.need_attn = need_attn


@register_model_architecture("smallcap_bigru", "smallcap_bigru")
def smallcap_bigru(args):
    """Embeddings 128, 1-layer biGRU encoder (256 per direction), 1-layer GRU decoder (256)."""
    args.dropout = getattr(args, "dropout", 0.1)
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 128)
    args.encoder_hidden_size = getattr(args, "encoder_hidden_size", 256)
    args.encoder_layers = getattr(args, "encoder_layers", 1)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 128)
    args.decoder_hidden_size = getattr(args, "decoder_hidden_size", 256)
    args.decoder_layers = getattr(args, "decoder_layers", 1)
    args.decoder_attention_dim = getattr(args, "decoder_attention_dim", args.decoder_hidden_size)
    args.decoder_input_feed = getattr(args, "decoder_input_feed", "True")
    args.share_all_embeddings = getattr(args, "share_all_embeddings", False)
