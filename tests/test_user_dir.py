"""Loading the user dir registers components and nothing else (issue 21), and our errors still
end fairseq's own command-line tools as one line with exit status 2 -- by the methods fairseq
calls, not by a process-wide hook."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fairseq_smallcap  # noqa: F401  (the checkpoint allowlist, for torch.load below)

from conftest import TRAIN_FLAGS, USER_DIR, run, tool

OPTIONAL = ("opusfilter", "bs4", "py3langid", "lingua", "matplotlib", "gensim", "datatrove")

LOAD_AND_REPORT = f"""
import sys
from pathlib import Path
hook = sys.excepthook
from fairseq import utils
from argparse import Namespace
utils.import_user_module(Namespace(user_dir={USER_DIR!r}))  # what --user-dir does
from fairseq.tasks import TASK_REGISTRY
from fairseq.models import ARCH_MODEL_REGISTRY
from fairseq.criterions import CRITERION_REGISTRY
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({OPTIONAL!r}))
print("optional:", ",".join(loaded))
print("hook unchanged:", sys.excepthook is hook)
print("registered:", "unsupervised_translation" in TASK_REGISTRY, "smallcap_very_small" in ARCH_MODEL_REGISTRY,
      "smallcap_bigru" in ARCH_MODEL_REGISTRY, "knowledge_distillation" in CRITERION_REGISTRY)
"""


def test_loading_the_user_dir_has_no_side_effects_beyond_registration():
    result = subprocess.run([sys.executable, "-c", LOAD_AND_REPORT], capture_output=True, text=True, check=True)
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert lines["optional"] == "", f"loading the user dir imported {lines['optional']}"
    assert lines["hook unchanged"] == "True"
    assert lines["registered"] == "True True True True"


def test_line_rules_load_when_a_command_reads_them():
    """The built-in rules are registered lazily, and then all of them are there."""
    code = ("import sys, fairseq_smallcap\nfrom fairseq_smallcap.curation import LINE_RULES\n"
            "before = 'opusfilter' in sys.modules\nnames = sorted(LINE_RULES.entries)\n"
            "print(before, 'opusfilter' in sys.modules, ','.join(names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["False", "True"]
    assert {"length", "url", "langid", "markup"} <= set(out[2].split(","))


def test_library_callers_get_the_exception_itself(tmp_path):
    """Outside a command-line tool, an error stays an exception (no exit, no printed line)."""
    from omegaconf import OmegaConf

    from fairseq_smallcap.tasks.unsupervised_translation import (
        UnsupervisedTranslationConfig, UnsupervisedTranslationError, UnsupervisedTranslationTask)

    cfg = OmegaConf.structured(UnsupervisedTranslationConfig(data=str(tmp_path / "missing")))
    with pytest.raises(UnsupervisedTranslationError, match="data directory not found"):
        UnsupervisedTranslationTask.setup_task(cfg)


def test_fairseq_train_finetuning_from_a_mismatched_checkpoint_is_one_line(tiny_data, trained_checkpoint, tmp_path):
    """The trainer wraps any error of ``load_state_dict`` in "Cannot load model parameters"
    (``except Exception``); ours must end the program before that, as one line, exit status 2,
    with what fairseq-train logged before it still on stdout."""
    ckpt, _ = trained_checkpoint
    state = torch.load(ckpt, weights_only=True)
    for key in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        state["model"][key] = state["model"][key][:-5]
    bad = tmp_path / "fewer_symbols.pt"
    torch.save(state, bad)
    result = run([tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, "--finetune-from-model", bad,
                  "--max-update", "1", "--save-dir", tmp_path / "save"], check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "Cannot load model parameters" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("fairseq-train: error: ") and "mismatched dictionary" in errors[0]
    assert "dictionary:" in result.stdout  # the task's log line, flushed before the exit


# ----------------------------------------------------------------------------- dependency direction
PACKAGE = Path(USER_DIR)
# command-line tools -> task / criterion / models -> data and curation primitives -> fairseq
TOOLS = {"__init__", "cli", "prepare", "back_parallel", "pseudo_parallel", "embeddings", "param_table",
         "distributed_train", "curation.static_curator", "curation.datatrove_pipeline",
         "distillation.teacher_topk", "distillation.sequence_kd", "distillation.cut_layers",
         "compression.prune_cli", "compression.structured_cli", "compression.lowrank_cli", "compression.ct2_export",
         "compression.translate", "compression.baselines"}
COMPONENTS = {"tasks", "criterions", "models"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    if module in TOOLS or any(module.startswith(t + ".") for t in TOOLS if t != "__init__"):
        return 2
    return 1 if module.split(".")[0] in COMPONENTS else 0


def imported_modules(path: Path):
    """Every fairseq_smallcap module ``path`` imports, at any depth of its code (with line)."""
    tree = ast.parse(path.read_text())
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("fairseq_smallcap"):
                target = node.module[len("fairseq_smallcap."):] if "." in node.module else "__init__"
            else:
                continue
            names = [target] if node.module else [f"{target}.{a.name}".lstrip(".") for a in node.names]
            for name in names:
                yield name, node.lineno


def resolve(name: str) -> str:
    """The module a dotted import target names (``curation.registry.LINE_RULES`` -> ``curation.registry``)."""
    while name and not ((PACKAGE / (name.replace(".", "/") + ".py")).exists()
                        or (PACKAGE / name.replace(".", "/") / "__init__.py").exists()):
        name = name.rpartition(".")[0]
    return name or "__init__"


def test_dependencies_point_one_way():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = module_name(path)
        for target, line in imported_modules(path):
            target = resolve(target)
            if target == source or target.startswith(source + "."):
                continue
            same_component = layer(source) == 1 and source.split(".")[0] == target.split(".")[0]
            if layer(target) > layer(source) or (layer(target) == layer(source) == 1 and not same_component):
                wrong.append(f"{path.relative_to(PACKAGE)}:{line}: {source} (layer {layer(source)}) imports "
                             f"{target} (layer {layer(target)})")
    assert not wrong, "\n".join(wrong)


def test_no_tool_calls_a_private_method_of_the_task():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if layer(module_name(path)) != 2:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "task"
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: task.{node.attr}")
    assert not wrong, "\n".join(wrong)
