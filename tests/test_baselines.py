"""The plain-PyTorch baselines: bf16, fp16 (GPU only) and torch dynamic int8, decoded with
fairseq's SequenceGenerator."""
import sys

import pytest
import torch
import torch.nn as nn

import fairseq_smallcap  # noqa: F401  (checkpoints load weights-only with its allowlist)
from fairseq_smallcap.compression import baselines

from conftest import run

BASELINE = [sys.executable, "-m", "fairseq_smallcap.compression.baselines"]


@pytest.fixture(scope="module")
def fp32(tiny_data, trained_checkpoint):
    model, task, _ = baselines.load_model(str(trained_checkpoint[0]), str(tiny_data), "en", "fr")
    return model, task, baselines.translate(model, task, "valid", max_len_b=8, max_sentences=256)


def test_dynamic_int8_quantizes_every_linear_and_decodes_with_fidelity(tiny_data, trained_checkpoint, fp32):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    reference, _, expected = fp32
    n_linear = sum(type(m) is nn.Linear for m in reference.modules())
    model, task, _ = baselines.load_model(str(trained_checkpoint[0]), str(tiny_data), "en", "fr")
    int8 = baselines.convert(model, "int8")
    assert baselines.quantized_linears(int8) == {"float": 0, "int8": n_linear}
    assert isinstance(int8.encoder.layers[0].fc1, DynamicLinear)
    assert isinstance(int8.decoder.layers[0].encoder_attn.q_proj, DynamicLinear)
    assert isinstance(int8.decoder.output_projection, DynamicLinear)  # the tied output projection too
    got = baselines.translate(int8, task, "valid", max_len_b=8, max_sentences=256)
    assert got["ids"] == expected["ids"] and len(got["ids"]) >= 256
    same = sum(a == b for a, b in zip(got["hypotheses"], expected["hypotheses"]))
    # an untrained 3-update model has flat distributions, so near-ties flip; still mostly equal
    assert same / len(got["ids"]) >= 0.75, same
    # teacher-forced next-token choices agree more closely than whole greedy hypotheses
    torch.manual_seed(0)
    src, prev = torch.randint(4, 300, (8, 12)), torch.randint(4, 300, (8, 10))
    with torch.no_grad():
        a = reference(src, torch.full((8,), 12), prev)[0]
        b = int8(src, torch.full((8,), 12), prev)[0]
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.9
    assert (a - b).abs().max() < 0.1 * a.abs().max()


def test_bf16_decodes_on_the_cpu(tiny_data, trained_checkpoint, fp32):
    _, _, expected = fp32
    model, task, _ = baselines.load_model(str(trained_checkpoint[0]), str(tiny_data), "en", "fr")
    bf16 = baselines.convert(model, "bf16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    got = baselines.translate(bf16, task, "valid", max_len_b=8, max_sentences=64)
    reference = dict(zip(expected["ids"], expected["hypotheses"]))
    assert len(got["ids"]) >= 64 and set(got["ids"]) <= set(reference)
    same = sum(reference[i] == h for i, h in zip(got["ids"], got["hypotheses"]))
    assert same / len(got["ids"]) >= 0.6, same  # bf16 keeps 8 bits of mantissa: more near-ties flip


def test_cli_decodes_in_int8_and_refuses_fp16_on_the_cpu(tiny_data, trained_checkpoint):
    ckpt = trained_checkpoint[0]
    result = run([*BASELINE, ckpt, "--data", tiny_data, "-s", "en", "-t", "fr", "--precision", "int8",
                  "--max-len-b", "6", "--batch-size", "32", "--max-sentences", "32"])
    assert len(result.stdout.splitlines()) == 32 and "int8: 32 sentences" in result.stderr
    for precision, message in (("fp16", "--precision fp16 needs a GPU (--device cuda): PyTorch's CPU kernels do "
                                        "not support fp16 decoding; use --precision bf16 on the CPU"),
                               ("int4", "--precision int4: unknown (choose from fp32, bf16, fp16, int8)")):
        bad = run([*BASELINE, ckpt, "--data", tiny_data, "-s", "en", "-t", "fr", "--precision", precision],
                  check=False)
        assert bad.returncode == 2 and bad.stdout == ""
        assert f"smallcap-baseline-decode: error: {message}" in bad.stderr.splitlines()
        assert "Traceback" not in bad.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 decoding needs a GPU")
def test_fp16_decodes_on_a_gpu(tiny_data, trained_checkpoint, fp32):
    model, task, _ = baselines.load_model(str(trained_checkpoint[0]), str(tiny_data), "en", "fr")
    fp16 = baselines.convert(model, "fp16", device="cuda")
    got = baselines.translate(fp16, task, "valid", max_len_b=8, max_sentences=64, device="cuda")
    assert len(got["hypotheses"]) >= 64
