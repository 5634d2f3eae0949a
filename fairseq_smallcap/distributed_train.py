"""Data-parallel ``fairseq-train`` on CPUs (gloo) or GPUs, without a cluster launcher.

fairseq's own multi-process path assumes CUDA: it spawns ``torch.cuda.device_count()``
processes, and under torchrun it computes ``distributed_rank % torch.cuda.device_count()``,
which divides by zero on a machine without GPUs. This launcher parses the usual
``fairseq-train`` command line, spawns ``--nproc`` workers itself, and hands each one to
fairseq's ``distributed_main`` with a TCP rendezvous on localhost:

    smallcap-train-distributed --nproc 2 -- DATA --user-dir fairseq_smallcap --cpu \\
        --task unsupervised_translation --arch smallcap_very_small ...

Everything after ``--`` is passed to fairseq-train unchanged. With ``--cpu`` the backend is
gloo, each worker gets ``cores / nproc`` intra-op threads, and ``--ddp-backend`` defaults to
fairseq's ``legacy_ddp`` (torch's DistributedDataParallel rejects the device ids fairseq passes
for CPU modules). Each worker reads its own shard of
the batches (and back-translates its own batches); gradients and logged statistics are summed
across workers by fairseq's trainer, exactly as in multi-GPU training.
"""
import argparse
import logging
import os
import socket
import sys

import torch

from .cli import configure_logging

logger = logging.getLogger("fairseq_smallcap.distributed_train")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(index: int, cfg, threads: int):
    """One spawned training process: fairseq's distributed_main around fairseq-train's main."""
    configure_logging()
    torch.set_num_threads(threads)
    from fairseq.distributed.utils import distributed_main
    from fairseq_cli.train import main as train_main

    distributed_main(index, train_main, cfg, {"start_rank": 0})


def cli_main(argv=None):
    parser = argparse.ArgumentParser(
        prog="smallcap-train-distributed",
        description="Run fairseq-train on N data-parallel worker processes (CPU/gloo or GPU/nccl).",
        usage="%(prog)s [--nproc N] [--port P] -- FAIRSEQ_TRAIN_ARGS...",
    )
    parser.add_argument("--nproc", type=int, default=2, help="number of worker processes")
    parser.add_argument("--port", type=int, default=0, help="rendezvous port on 127.0.0.1 (0: a free one)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        split = argv.index("--")
        ours, train_argv = argv[:split], argv[split + 1:]
    else:
        ours, train_argv = [], argv
    args = parser.parse_args(ours)
    if args.nproc < 1:
        parser.error(f"--nproc must be at least 1, got {args.nproc}")

    configure_logging()
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    train_parser = options.get_training_parser()
    train_args = options.parse_args_and_arch(train_parser, train_argv)
    cfg = convert_namespace_to_omegaconf(train_args)
    on_cpu = cfg.common.cpu or not torch.cuda.is_available()
    if not on_cpu and args.nproc > torch.cuda.device_count():
        parser.error(f"--nproc {args.nproc} > {torch.cuda.device_count()} visible GPUs (add --cpu?)")

    dist = cfg.distributed_training
    dist.distributed_world_size = args.nproc
    dist.distributed_init_method = f"tcp://127.0.0.1:{args.port or free_port()}"
    dist.distributed_backend = "gloo" if on_cpu else "nccl"
    dist.distributed_rank = None  # distributed_main assigns start_rank + process index
    dist.distributed_no_spawn = False
    if on_cpu and dist.ddp_backend in ("c10d", "pytorch_ddp"):
        # torch's DistributedDataParallel takes no device ids for CPU modules, and fairseq
        # always passes them; fairseq's legacy_ddp all-reduces once per update instead.
        dist.ddp_backend = "legacy_ddp"
    threads = max(1, (os.cpu_count() or 1) // args.nproc) if on_cpu else torch.get_num_threads()
    logger.info(f"spawning {args.nproc} workers ({dist.distributed_backend}, "
                f"{dist.distributed_init_method}, {threads} threads each)")
    torch.multiprocessing.spawn(fn=_worker, args=(cfg, threads), nprocs=args.nproc, join=True)


if __name__ == "__main__":
    cli_main()
