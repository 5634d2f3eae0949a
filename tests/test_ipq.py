"""Iterative product quantization with fairseq's quantizer: the shipped config covers every Table 1
architecture, fairseq's behaviours the module docstring relies on, and one tiny iPQ run."""
import re

import pytest
import torch
import torch.nn as nn

import fairseq_smallcap  # noqa: F401  (architectures; checkpoints load weights-only with its allowlist)
from fairseq_smallcap.compression import ipq
from fairseq_smallcap.models.smallcap_transformer import TABLE1_SIZES
from fairseq_smallcap.param_table import _DictionaryOnlyTask, arch_args

from conftest import TRAIN_FLAGS, run, tool


def _build(arch, vocab=120, **overrides):
    from fairseq.models import ARCH_MODEL_REGISTRY

    return ARCH_MODEL_REGISTRY[arch].build_model(arch_args(arch, overrides), _DictionaryOnlyTask(vocab))


def _kind(name):
    if name.endswith(("fc1", "fc2")):
        return 0
    if name.endswith(("q_proj", "k_proj", "v_proj", "out_proj")):
        return 1
    return 2


@pytest.mark.parametrize("arch", list(TABLE1_SIZES))
def test_config_covers_every_linear_and_embedding_of_each_table1_arch(arch):
    config = ipq.load_config()  # fairseq's own parsing (quantization_options.parse_config_yaml)
    assert len(config["layers_to_quantize"]) == 3
    model = _build(arch)
    found, problems = ipq.coverage(model, config)  # fairseq's own get_layers / get_param
    assert problems == []
    dim = TABLE1_SIZES[arch]["dim"]
    linears = [n for n, m in model.named_modules() if type(m) is nn.Linear and n != "decoder.output_projection"]
    tables = [n for n, m in model.named_modules() if type(m) is nn.Embedding]
    assert sorted(found) == sorted(linears + tables)
    assert sorted(tables) == ["decoder.embed_tokens", "encoder.embed_tokens"]
    assert any(".encoder_attn." in n for n in found) and any("encoder.layers.0.self_attn" in n for n in found)
    modules = dict(model.named_modules())
    for name, (stage, block, centroids) in found.items():
        width = ipq.input_features(modules[name])
        assert width in (dim, 4 * dim) and width % block == 0 and centroids == 256, name
        assert stage == _kind(name), name
    # the tied output projection is the decoder table's weight: not a layer of its own
    assert model.decoder.output_projection.weight is model.decoder.embed_tokens.weight


def test_config_covers_the_quant_noise_layers_and_rejects_a_bad_block_size(tmp_path):
    model = _build("smallcap_medium", quant_noise_pq=0.1, quant_noise_pq_block_size=4)
    found, problems = ipq.coverage(model, ipq.load_config())
    assert problems == [] and {"encoder.quant_noise", "decoder.quant_noise"} <= set(found)
    # a block of 8 does not divide the medium size's 420: coverage says so, layer by layer
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(ipq.CONFIG).read().replace("fc1: 4", "fc1: 8"))
    _, problems = ipq.coverage(_build("smallcap_medium"), ipq.load_config(str(bad)))
    assert problems and all("fc1: block size 8 does not divide its input dimension 420" in p for p in problems)


def test_fairseq_quantizer_schedule_needs_a_multiple_of_the_stages():
    from fairseq.quantization_utils import Quantizer

    assert Quantizer(ipq.CONFIG, max_epoch=0, max_update=30).update_schedule == 10
    with pytest.raises(AssertionError, match="must be evenly divisible"):
        Quantizer(ipq.CONFIG, max_epoch=0, max_update=31)


def test_quant_noise_changes_weights_permanently():
    """What the module docstring says of fairseq 0.12's quant-noise (item 4)."""
    from fairseq.modules import MultiheadAttention
    from fairseq.modules.quant_noise import quant_noise

    torch.manual_seed(0)
    linear = quant_noise(nn.Linear(32, 16), 0.1, 4).train()
    x = torch.randn(3, 32)
    zeros = []
    for _ in range(20):
        linear(x)  # no optimizer step: only forward passes
        zeros.append(float((linear.weight == 0).float().mean()))
    assert zeros[0] > 0 and zeros[-1] > 0.5  # blocks dropped for good, more at every pass
    attention = MultiheadAttention(32, 2, self_attention=True, q_noise=0.5, qn_block_size=4).train()
    before = attention.q_proj.weight.detach().clone()
    t = torch.randn(5, 2, 32)
    attention(t, t, t)
    assert torch.equal(before, attention.q_proj.weight)  # the fast path never runs the noise hook


def test_tiny_ipq_run_quantizes_every_stage_and_decodes(tiny_data, trained_checkpoint, tmp_path):
    dense_path, _ = trained_checkpoint
    save = tmp_path / "ipq"
    log = run([tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, "--lambda-dae", "1", "--lambda-bt", "0",
               "--max-update", "3", "--disable-validation", "--save-dir", save,
               "--finetune-from-model", dense_path, "--quantization-config-path", ipq.CONFIG]).stdout
    steps = re.findall(r"quantizing model \(step=(\d)", log)
    assert steps == ["0", "1", "2"] and "num_updates 3" in log
    quantized = [name for line in re.findall(r"quantized layers: \[(.*)\]", log) for name in re.findall(r"'([^']+)'", line)]
    assert len(quantized) == 6 + 20 + 2  # FFNs, attention projections, embedding tables

    ckpt = save / "checkpoint_last.pt"
    # fairseq-generate builds the model dense and cannot load it (fairseq issue 2986) ...
    generate = run([tool("fairseq-generate"), tiny_data, "--user-dir", TRAIN_FLAGS[1], "--task",
                    "unsupervised_translation", "-s", "en", "-t", "fr", "--gen-subset", "valid", "--path", ckpt,
                    "--beam", "1", "--max-len-b", "5", "--cpu"], check=False)
    assert generate.returncode != 0 and "encoder.embed_tokens.centroids" in generate.stderr
    # ... baselines.load_model rebuilds the PQ layers first (ipq.restore_pq_modules_)
    from fairseq.modules.quantization.pq.modules import PQEmbedding, PQLinear
    from fairseq_smallcap.compression import baselines

    model, task, _ = baselines.load_model(str(ckpt), str(tiny_data), "en", "fr")
    assert sum(isinstance(m, (PQLinear, PQEmbedding)) for m in model.modules()) == 28
    assert type(model.decoder.output_projection) is nn.Linear  # the tied projection stays dense
    dense_model, _, _ = baselines.load_model(str(dense_path), str(tiny_data), "en", "fr")
    size = ipq.pq_size(model)
    # 373 KB -> 267 KB here: at d=32, 256 centroids x 28 layers and the dense positions and
    # output projection weigh as much as the indices save
    assert size["quantized_layers"] == 28 and size["total_bytes"] < 0.75 * ipq.dense_size(dense_model)
    assert size["total_bytes"] == ipq.projected_size(dense_model)["total_bytes"]
    out = baselines.translate(model, task, "valid", max_len_b=5, max_sentences=64)
    assert len(out["hypotheses"]) >= 64
