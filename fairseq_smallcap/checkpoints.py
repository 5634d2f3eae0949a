"""Writing the checkpoints our commands derive from another one (a cut, factorised, pruned or
finalized model): fairseq's checkpoint layout, the config as a plain container (the one fairseq
reads; ``args`` dropped), written through a temporary name and renamed."""
import os


def fresh_training_state(state: dict, **extra) -> None:
    """Make ``state`` a new model to train: no optimizer state, a training history of zero
    updates (keeping the criterion and optimizer names), the data iterator at its start, and
    ``extra`` as its extra state."""
    last = state["optimizer_history"][-1] if state.get("optimizer_history") else {}
    state["optimizer_history"] = [{"criterion_name": last.get("criterion_name"),
                                   "optimizer_name": last.get("optimizer_name"),
                                   "lr_scheduler_state": {}, "num_updates": 0}]
    state.pop("last_optimizer_state", None)
    state["extra_state"] = {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "version": 2}, **extra}


def save_checkpoint(state: dict, out: str) -> None:
    """Write ``state`` to ``out`` through a temporary file in its directory, renamed at the end."""
    import tempfile

    from fairseq import checkpoint_utils
    from omegaconf import OmegaConf

    if OmegaConf.is_config(state.get("cfg")):
        state["cfg"] = OmegaConf.to_container(state["cfg"], resolve=True, enum_to_str=True)
    state["args"] = None  # the config is the one fairseq reads
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.", suffix=".partial",
                               dir=os.path.dirname(os.path.abspath(out)))
    os.close(fd)
    try:
        checkpoint_utils.torch_persistent_save(state, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
