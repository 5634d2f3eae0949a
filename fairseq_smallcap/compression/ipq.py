"""Product quantization of the smallcap Transformers with fairseq's quant-noise and iterative PQ.

    # 1. (optional; read point 4 below first) train from the start with quantization noise
    fairseq-train DATA ... --quant-noise-pq 0.05 --quant-noise-pq-block-size 4
    # 2. iPQ: 3 stages (ipq_config.yaml), K updates of centroid fine-tuning after each
    fairseq-train DATA ... --finetune-from-model DENSE.pt --max-update 3K \\
        --quantization-config-path fairseq_smallcap/compression/ipq_config.yaml
    # 3. decode / measure: fairseq-generate cannot load the result; smallcap-baseline-decode can
    python -m fairseq_smallcap.compression.baselines CKPT --data DATA -s en -t fr

fairseq's trainer reads ``--quantization-config-path`` with
``fairseq.quantization_utils.Quantizer``: at each stage it replaces the layers matching
``layers_to_quantize[stage]`` by ``PQLinear``/``PQEmbedding`` (k-means of the weight's blocks
of ``block_size`` consecutive input weights into ``n_centroids`` centroids, 15 EM iterations),
rebuilds the optimizer, and trains the centroids (each the average gradient of its blocks).
:data:`CONFIG` (``ipq_config.yaml``) covers, for every Table 1 architecture, every ``nn.Linear``
(encoder and decoder FFNs, encoder self-attention, decoder self- and encoder-decoder attention)
and both token embedding tables, with block sizes dividing every width (4 for inputs of ``dim``
wide, as 420 is not a multiple of 8; 8 for fc2's ``4 dim``): :func:`coverage` checks it with
fairseq's own parsing and matching (``tests/test_ipq.py``, every arch). Learned positions are
left dense (fairseq would replace them by a plain ``PQEmbedding`` that drops the position
computation).

What holds, from fairseq 0.12's code (``fairseq/modules/quant_noise.py``,
``fairseq/quantization_utils.py``, ``fairseq/modules/quantization/pq/``) and from runs here —
the reasons for the failures users report (fairseq issues 2232, 2986, 3163):

1. **The stage schedule counts updates from 0 of the global counter.** ``Quantizer`` quantizes
   stage 0 when the first epoch begins and stage ``s`` when ``num_updates % (max_update /
   n_stages) == 0``; ``--max-update`` must be a multiple of the number of stages (3 here). A run
   that continues a dense run's counter (``--restore-file`` without resetting the optimizer,
   e.g. 30000 dense updates then ``--max-update 45000``, as in issue 3163) quantizes stage 1 at
   update 45000 — the last one — and never stage 2: not all layers get quantized, and the last
   quantized stage gets no fine-tuning. Start iPQ with ``--finetune-from-model DENSE.pt`` (the
   counter restarts at 0) and ``--max-update 3K``: every stage then gets K updates of
   centroid fine-tuning.
2. **The quantizer's state is not saved** (fairseq 0.12's trainer never stores
   ``Quantizer.state_dict()``), and the checkpoint holds ``centroids``/``assignments``/``counts``
   where the model has ``weight``: ``fairseq-generate`` fails to load it (issue 2986), and an
   interrupted iPQ run cannot resume (stage 0 would be quantized again on a model built dense).
   :func:`restore_pq_modules_` rebuilds the ``PQLinear``/``PQEmbedding`` modules from the shapes
   in the state dict before loading; ``fairseq_smallcap.compression.baselines.load_model``
   (``smallcap-baseline-decode``) decodes with it. Run iPQ in one go.
3. **Tied output projection.** fairseq's quantizer lists layers by
   ``model.named_parameters()``, which names a tied weight once (``decoder.embed_tokens``); it
   then replaces ``decoder.embed_tokens`` by a ``PQEmbedding``, while
   ``decoder.output_projection`` keeps the original ``Parameter``: the output projection stays a
   dense fp32 V x d matrix, no longer tied, trained on its own from then on, and fairseq's
   ``SizeTracker`` log line counts the table as compressed although its fp32 copy remains
   (on the test model its log line said 0.21 MB where :func:`pq_size` counts 0.25 MB, both
   MiB). With the Table 1
   vocabularies (52k-64k) this matrix is most of what iPQ leaves (below).
4. **Quant-noise is destructive in fairseq 0.12.** Its forward pre-hook does
   ``mod.weight.data = weight.masked_fill(mask, 0) / (1 - p)``: every training forward pass
   *permanently* zeroes a fraction p of the weight blocks and scales the others by 1/(1-p)
   (p = 0.1, 20 forward passes without an optimizer step: 90% of a layer's weights are zero and
   the largest is 8x larger, ``tests/test_ipq.py::test_quant_noise_changes_weights_permanently``),
   so between optimizer steps weights are wiped and inflated, more so with our task's several
   forward passes per update (MASS, DAE, BT). That is a plausible cause of the "does not learn,
   outputs commas" of issue 2232 (a translation model trained from scratch with
   ``--quant-noise-pq 0.1``); we did not reproduce that run. The noise also misses the
   self-attention projections: fairseq's MultiheadAttention reads ``q_proj.weight`` ... directly
   (``F.multi_head_attention_forward``) in training, so their pre-hooks never run; the FFNs and
   the encoder-decoder attention get it. And with ``--quant-noise-pq > 0`` fairseq adds a randomly
   initialised d x d ``quant_noise`` Linear after the embeddings of encoder and decoder, absent
   from a checkpoint trained without it: ``--finetune-from-model DENSE.pt --quant-noise-pq 0.1``
   fails to load (missing ``encoder.quant_noise.weight``, ``decoder.quant_noise.weight``). So
   quant-noise has to be on from the start of training, where p = 0.1 damages that training; the
   iPQ stage itself (``--quantization-config-path``) needs no quant-noise and runs from a dense
   checkpoint. We did not patch fairseq's hook (it lives in fairseq's layers, and loading the
   user dir changes no fairseq behaviour); use a small p or iPQ without quant-noise, and measure
   fidelity.
5. ``PQEmbedding`` is built without ``padding_idx`` (the padding row is quantized and trained
   like any other); attention masks padding, so outputs do not depend on it.
6. fairseq's EM runs on the weights only (not on the input activations of the paper, issue
   2420), and the centroids are fine-tuned on the training loss without distillation (issue
   2340): expect a larger loss than the paper's, and check fidelity against the fp32 model.

Measured here (CPU, tiny model: d = 32, FFN 64, 1 + 2 layers, 406 symbols, 200 updates of DAE +
BT on 300 Multi30k lines; then 30 more updates, dense or iPQ with 10 per stage): every stage
ran (28 layers quantized: 6 FFN, 20 attention, 2 tables; the k-means take about 2 s per layer
here), the training loss kept moving after each stage — no collapse — but stayed 0.04-0.09 above
the dense control's on the same batches (5.92/5.89/5.98/5.96/5.96/6.01 against
5.87/5.85/5.92/5.92/5.88/5.92 at updates 5...30), and greedy outputs on 512 valid sentences were
as degenerate as the fp32 model's ("Un homme et une ...": this model is too small and short-
trained to translate), with a fidelity (BLEU against the fp32 model's output) of 12.8, against
24.4 for the dense control fine-tuned the same 30 updates and 81.6 for dynamic int8. So on this
evidence iPQ runs and is not garbage relative to its starting point; whether it is usable on a
trained Table 1 model is for the compression benchmark to measure.

Size (:func:`projected_size`: what :func:`pq_size` reports after all three stages; per quantized
layer ``n_centroids x block_size`` fp16 centroids, one byte per block and the fp32 bias,
everything else fp32): the test model 373 KB -> 267 KB (the dense positions and output
projection, and 28 x 2 KB of centroids, dominate at d = 32). Table 1 sizes with their
vocabularies: very small 61.0 MB -> 31.1 MB (1.96x), small 164.0 -> 77.0 MB (2.13x), medium
278.7 -> 106.2 MB (2.63x), large 1235.1 -> 338.5 MB (3.65x); the untied fp32 output projection
is 26.7, 65.7, 87.5 and 262.7 MB of those. The indices of the quantized layers are 1/16 of their
fp32 size (blocks of 4: 16 bytes -> 1 byte; 1/32 with 8), plus 2 KB of centroids each; keeping the projection tied to the quantized table would
be needed to get the whole model there (fairseq's quantizer cannot).
"""
import logging
import os
import re
from typing import Dict, List, Optional, Tuple

import torch.nn as nn

from ..errors import SmallcapError

logger = logging.getLogger("fairseq_smallcap.compression.ipq")
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ipq_config.yaml")


class IPQError(SmallcapError):
    """A bad iPQ configuration or an iPQ checkpoint that cannot be loaded."""


def load_config(path: str = CONFIG) -> dict:
    """The config as fairseq's trainer parses it (``quantization_options.parse_config_yaml``)."""
    import yaml
    from fairseq.modules.quantization import quantization_options

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise IPQError(f"--quantization-config-path {path}: cannot read it ({e})") from None
    return quantization_options.parse_config_yaml(data or {})


def quantizable_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """The layers iPQ should cover: every ``nn.Linear`` and token ``nn.Embedding`` (exact types:
    fairseq's learned positions subclass ``nn.Embedding`` and are left dense), named as fairseq's
    ``get_layers`` names them (``named_parameters`` minus ``.weight``: a tied weight once)."""
    modules = dict(model.named_modules())
    layers = {}
    for name, _ in model.named_parameters():
        if not name.endswith(".weight"):
            continue
        layer = name[: -len(".weight")]
        module = modules.get(layer)
        if type(module) in (nn.Linear, nn.Embedding):
            layers[layer] = module
    return layers


def input_features(module: nn.Module) -> int:
    return module.in_features if isinstance(module, nn.Linear) else module.embedding_dim


def coverage(model: nn.Module, config: dict) -> Tuple[Dict[str, Tuple[int, int, int]], List[str]]:
    """For each quantizable layer: ``(stage, block_size, n_centroids)`` by fairseq's own
    ``get_layers``/``get_param``; and the problems (a layer no stage quantizes, one quantized
    twice, a block size that does not divide its input dimension, fewer blocks than centroids,
    a pattern matching something that is not a Linear/Embedding)."""
    from fairseq.modules.quantization.pq.utils import get_layers, get_param

    layers = quantizable_layers(model)
    modules = dict(model.named_modules())
    found, problems = {}, []
    for stage, pattern in enumerate(config["layers_to_quantize"]):
        try:
            re.compile(pattern)
        except re.error as e:
            problems.append(f"stage {stage}: {pattern!r} is not a regular expression ({e})")
            continue
        for name in get_layers(model, pattern):
            if name not in layers:
                problems.append(f"stage {stage}: {name} ({type(modules.get(name)).__name__}) matches but "
                                "cannot be quantized")
                continue
            if name in found:
                problems.append(f"{name}: quantized at stages {found[name][0]} and {stage}")
                continue
            module = layers[name]
            try:
                block = get_param(module, name, config["block_sizes"])
                centroids = get_param(module, name, config["n_centroids"])
            except KeyError as e:
                problems.append(f"{name}: {e}")
                continue
            found[name] = (stage, block, centroids)
            width = input_features(module)
            if width % block:
                problems.append(f"{name}: block size {block} does not divide its input dimension {width}")
            elif module.weight.numel() // block < centroids:
                problems.append(f"{name}: {module.weight.numel() // block} blocks, fewer than {centroids} centroids")
    for name in layers:
        if name not in found:
            problems.append(f"{name} ({type(layers[name]).__name__} {tuple(layers[name].weight.shape)}) is "
                            "quantized by no stage")
    return found, problems


def restore_pq_modules_(model: nn.Module, state_dict: dict) -> List[str]:
    """Replace, in place, each layer whose weights in ``state_dict`` are iPQ's
    (``NAME.centroids``, ``NAME.assignments``) by a ``PQLinear``/``PQEmbedding`` of those shapes,
    so that the state dict loads (fairseq-generate builds the model dense: issue 2986)."""
    from fairseq.modules.quantization.pq.modules import PQEmbedding, PQLinear

    names = sorted(key[: -len(".centroids")] for key in state_dict if key.endswith(".centroids"))
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise IPQError(f"the checkpoint quantizes {name}, which the model does not have") from None
        centroids = state_dict[f"{name}.centroids"].float()
        assignments = state_dict[f"{name}.assignments"]
        if isinstance(module, nn.Linear):
            bias = module.bias.data.clone() if module.bias is not None else None
            new = PQLinear(centroids.clone(), assignments.clone(), bias, module.in_features, module.out_features)
        elif isinstance(module, nn.Embedding):
            new = PQEmbedding(centroids.clone(), assignments.clone(), module.num_embeddings, module.embedding_dim)
        elif isinstance(module, (PQLinear, PQEmbedding)):
            continue
        else:
            raise IPQError(f"the checkpoint quantizes {name}, a {type(module).__name__} in the model")
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
    return names


def pq_size(model: nn.Module) -> Dict[str, float]:
    """Bytes to store ``model`` as iPQ leaves it: PQ layers as fp16 centroids + 1-byte (2 above
    256 centroids) block indices + fp32 biases; every other parameter in fp32 (each tensor once)."""
    from fairseq.modules.quantization.pq.modules import PQEmbedding, PQLinear

    quantized, seen = 0, set()
    n_layers = 0
    for module in model.modules():
        if isinstance(module, (PQLinear, PQEmbedding)):
            n_layers += 1
            index_bytes = 1 if module.n_centroids <= 256 else 2
            quantized += module.centroids.numel() * 2 + module.assignments.numel() * index_bytes
            seen.add(module.centroids.data_ptr())
            if getattr(module, "bias", None) is not None:
                quantized += module.bias.numel() * 4
                seen.add(module.bias.data_ptr())
    dense = sum(p.numel() * 4 for p in model.parameters() if p.data_ptr() not in seen)
    return {"quantized_layers": n_layers, "quantized_bytes": quantized, "dense_bytes": dense,
            "total_bytes": quantized + dense}


def projected_size(model: nn.Module, config: Optional[dict] = None) -> Dict[str, float]:
    """What :func:`pq_size` will say once iPQ with ``config`` has quantized every layer of the
    dense ``model`` (the sizes do not depend on the weights' values), without running it."""
    found, problems = coverage(model, config or load_config())
    if problems:
        raise IPQError("the iPQ config does not fit this model: " + "; ".join(problems[:3]))
    modules = dict(model.named_modules())
    quantized, seen = 0, set()
    for name, (_, block, centroids) in found.items():
        module = modules[name]
        quantized += centroids * block * 2 + module.weight.numel() // block * (1 if centroids <= 256 else 2)
        seen.add(module.weight.data_ptr())
        if getattr(module, "bias", None) is not None:
            quantized += module.bias.numel() * 4
            seen.add(module.bias.data_ptr())
    # the tied output projection keeps (a dense copy of) the decoder table: see the docstring
    dense = sum(p.numel() * 4 for p in model.parameters() if p.data_ptr() not in seen)
    out = getattr(getattr(model, "decoder", None), "output_projection", None)
    if isinstance(out, nn.Linear) and out.weight.data_ptr() in seen:
        dense += out.weight.numel() * 4
    return {"quantized_layers": len(found), "quantized_bytes": quantized, "dense_bytes": dense,
            "total_bytes": quantized + dense}


def dense_size(model: nn.Module) -> int:
    """Bytes of the model's parameters in fp32 (tied ones once)."""
    return sum(p.numel() * 4 for p in model.parameters())
