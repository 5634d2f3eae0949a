"""Where the time of one DAE + online back-translation update goes, and how fast the batched
greedy back-translation decoder is against fairseq's SequenceGenerator (beam 1, the decoder of
fairseq's ``online_backtranslation`` task), on the same batches and weights.

    python benchmarks/bt_profile.py --data runs/multi30k-data --checkpoint runs/demo/bt/checkpoint_best.pt

Prints, per update (2 languages x {DAE, BT} sub-batches of ``--max-tokens``): the time of the
back-translation decoding with each decoder, and of the forward + backward passes.
"""
import argparse
import time

import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.sequence_generator import SequenceGenerator

import fairseq_smallcap  # noqa: F401
from fairseq_smallcap.backtranslation import greedy_decode


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--checkpoint", default=None, help="weights to decode with (default: untrained)")
    parser.add_argument("--arch", default="smallcap_very_small")
    parser.add_argument("--max-tokens", type=int, default=2000)
    parser.add_argument("--updates", type=int, default=8, help="updates' worth of batches to time")
    args = parser.parse_args(argv)

    train_args = options.parse_args_and_arch(options.get_training_parser(), [
        args.data, "--user-dir", fairseq_smallcap.__path__[0], "--task", "unsupervised_translation",
        "--arch", args.arch, "--max-tokens", str(args.max_tokens), "--cpu",
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
        "--lambda-dae", "1", "--lambda-bt", "1"])
    cfg = convert_namespace_to_omegaconf(train_args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    if args.checkpoint:
        model.load_state_dict(checkpoint_utils.load_checkpoint_to_cpu(args.checkpoint)["model"])
    criterion = task.build_criterion(cfg.criterion)
    task.load_dataset("train")
    itr = task.get_batch_iterator(task.datasets["train"], max_tokens=args.max_tokens, seed=1)
    batches = list(zip(range(args.updates), itr.next_epoch_itr(shuffle=True)))
    d = task.dictionary
    generator = SequenceGenerator([model], d, beam_size=1, max_len_a=task.cfg.bt_max_len_a,
                                  max_len_b=task.cfg.bt_max_len_b, min_len=5,
                                  max_len=model.max_decoder_positions() - 1)

    def ours(sample, other):
        net_input = sample["net_input"]
        bos = torch.full_like(net_input["src_lengths"], task.lang_idx[other])
        return greedy_decode(model, net_input["src_tokens"], net_input["src_lengths"], bos, d.eos(), d.pad(),
                             task.cfg.bt_max_len_a, task.cfg.bt_max_len_b, 511, task.never_generated)

    def theirs(sample, other):
        return generator.generate([model], sample, bos_token=task.lang_idx[other])

    timings = {"BT decoding, fairseq SequenceGenerator (beam 1)": 0.0, "BT decoding, greedy_decode": 0.0,
               "forward + backward, 4 sub-batches": 0.0}
    model.eval()
    for name, decode in (("BT decoding, fairseq SequenceGenerator (beam 1)", theirs),
                         ("BT decoding, greedy_decode", ours)):
        decode(batches[0][1]["en-BT"], "fr")  # warm-up
        start = time.perf_counter()
        with torch.no_grad():
            for _, sample in batches:
                for lang, other in (("en", "fr"), ("fr", "en")):
                    decode(sample[f"{lang}-BT"], other)
        timings[name] = (time.perf_counter() - start) / len(batches)
    model.train()
    start = time.perf_counter()
    for _, sample in batches:
        for key in ("en-DAE", "fr-DAE", "en-BT", "fr-BT"):
            loss, _, _ = criterion(model, sample[key])
            loss.backward()
    timings["forward + backward, 4 sub-batches"] = (time.perf_counter() - start) / len(batches)

    fwd_bwd = timings["forward + backward, 4 sub-batches"]
    print(f"\nper update ({args.updates} updates' batches, {args.arch}, --max-tokens {args.max_tokens}, "
          f"{torch.get_num_threads()} threads, weights: {args.checkpoint or 'untrained'})")
    print("| part | seconds/update |")
    print("|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.3f} |")
    fairseq_decode = timings["BT decoding, fairseq SequenceGenerator (beam 1)"]
    our_decode = timings["BT decoding, greedy_decode"]
    print(f"\ndecoding speed-up: {fairseq_decode / our_decode:.2f}x; decoding share of an update: "
          f"{fairseq_decode / (fairseq_decode + fwd_bwd):.0%} (SequenceGenerator), "
          f"{our_decode / (our_decode + fwd_bwd):.0%} (greedy_decode); "
          f"bound on the update speed-up from decoding alone: {(fairseq_decode + fwd_bwd) / fwd_bwd:.2f}x")


if __name__ == "__main__":
    main()
