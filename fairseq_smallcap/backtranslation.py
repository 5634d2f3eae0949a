"""Batched greedy (or sampled) decoding for online back-translation (Lample et al. 2018; Artetxe
et al. 2018).

Online back-translation translates every monolingual batch with the current model before
training on the (synthetic source, real target) pairs, so decoding speed bounds training speed.
fairseq's ``online_backtranslation`` task runs the general beam-search :class:`SequenceGenerator`
with a beam of 1. Here the greedy search is written for what it is: one incremental decoder
step per output position for the whole batch, finished sentences dropped from the batch (the
encoder output and the decoder's incremental state are reordered to the rows still running),
and a per-sentence length cap ``a * source_length + b`` so that a babbling model's output stops
at a sane length.

With ``sampling_topk`` the next token is drawn instead of taken as the argmax: from the whole
distribution (-1) or from its K most likely tokens, after dividing the logits by a temperature.
Edunov et al. 2018 ("Understanding Back-Translation at Scale", Sec. 3 and 5.1) found sampled
and noised back-translations better training sources than greedy or beam ones, which are the
model's most likely, least varied outputs. Draws come from a ``torch.Generator`` the caller
seeds, so that a run is reproducible and resumes the same.
"""
from typing import Dict, Iterable, List, Optional

import torch
from fairseq.data import data_utils


@torch.no_grad()
def greedy_decode(
    model,
    src_tokens: torch.Tensor,
    src_lengths: torch.Tensor,
    bos: torch.Tensor,
    eos: int,
    pad: int,
    max_len_a: float = 1.3,
    max_len_b: int = 5,
    max_len: Optional[int] = None,
    banned_tokens: Iterable[int] = (),
    sampling_topk: int = 0,
    temperature: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> List[torch.Tensor]:
    """Translate a batch greedily with the model in its current mode (call ``model.eval()``).

    Args:
        bos: (B,) the first decoder token of every row (the target language token).
        max_len_a, max_len_b: a sentence stops after ``a * src_length + b`` tokens (eos included).
        max_len: hard cap (the decoder's positions).
        banned_tokens: never generated (padding, language tokens, <mask>, ...).
        sampling_topk: 0: greedy (the argmax); -1: sample from the whole distribution;
            K > 0: sample from the K most likely tokens (K = 1 is greedy).
        temperature: the logits are divided by it before sampling.
        generator: the random numbers of the draws (torch's default generator if None).

    Returns:
        one 1-D tensor per row: the generated tokens, ending with eos, without the bos.
    """
    bsz = src_tokens.size(0)
    device = src_tokens.device
    caps = (src_lengths.to(torch.float) * max_len_a + max_len_b).long().clamp(min=1)
    if max_len is not None:
        caps = caps.clamp(max=max_len)
    steps = int(caps.max())
    banned = torch.tensor(sorted(set(banned_tokens) | {pad}), dtype=torch.long, device=device)

    encoder_out = model.encoder(src_tokens, src_lengths=src_lengths)
    incremental_state: Dict[str, Dict[str, Optional[torch.Tensor]]] = {}
    tokens = torch.full((bsz, steps + 1), pad, dtype=torch.long, device=device)
    tokens[:, 0] = bos
    rows = torch.arange(bsz, device=device)  # original row of each running hypothesis
    outputs: List[Optional[torch.Tensor]] = [None] * bsz

    for step in range(steps):
        logits, _ = model.decoder(
            tokens[:, : step + 1], encoder_out=encoder_out, incremental_state=incremental_state
        )
        logits = logits[:, -1, :]
        logits.index_fill_(1, banned, float("-inf"))
        if step == 0:
            logits[:, eos] = float("-inf")  # no empty translations
        next_tokens = logits.argmax(dim=-1) if sampling_topk == 0 else sample_next(
            logits, sampling_topk, temperature, generator)
        next_tokens = torch.where(caps[rows] <= step + 1, torch.full_like(next_tokens, eos), next_tokens)
        tokens[:, step + 1] = next_tokens

        done = next_tokens.eq(eos)
        if done.any():
            for i in done.nonzero().view(-1).tolist():
                outputs[int(rows[i])] = tokens[i, 1 : step + 2].clone()
            keep = (~done).nonzero().view(-1)
            if keep.numel() == 0:
                break
            rows, tokens = rows[keep], tokens[keep]
            encoder_out = model.encoder.reorder_encoder_out(encoder_out, keep)
            model.decoder.reorder_incremental_state_scripting(incremental_state, keep)
    return outputs


def sample_next(logits: torch.Tensor, topk: int, temperature: float,
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """(B,) tokens drawn from ``softmax(logits / temperature)``, restricted to each row's ``topk``
    most likely tokens when ``topk > 0`` (banned tokens have logit -inf and are never drawn)."""
    logits = logits.float() / temperature
    if topk > 0:
        values, indices = logits.topk(min(topk, logits.size(-1)), dim=-1)
        logits = torch.full_like(logits, float("-inf")).scatter_(-1, indices, values)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).view(-1)


def make_backtranslated_source(
    hypotheses: List[torch.Tensor], lang_idx: int, pad: int, eos: int, left_pad: bool
):
    """Build the encoder input of back-translated pairs: ``[__lang__] hypothesis </s>``."""
    lang = hypotheses[0].new([lang_idx])
    sources = [torch.cat([lang, hyp]) for hyp in hypotheses]
    src_tokens = data_utils.collate_tokens(sources, pad, eos, left_pad=left_pad)
    src_lengths = torch.tensor([s.numel() for s in sources], dtype=torch.long)
    return src_tokens, src_lengths.to(src_tokens.device)
