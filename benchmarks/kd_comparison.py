"""Knowledge distillation against the data-driven route on Multi30k (unsupervised split): a small
student trained alone, with word-level KD, with sequence-level KD, and with the curated method,
at the same updates and seed, with the teacher's cost counted.

    python benchmarks/kd_comparison.py --work runs/ablation --teacher-arch smallcap_small \
        --student-arch smallcap_very_small --seed 1 --mass-updates 1752 --updates 800

It shares its stages (and, with the same ``--work``, its finished runs) with
``curation_ablation.py``; each is skipped when its output exists, so a run resumes:
1. the teacher: the foundation recipe (MASS pretraining, then DAE + online BT fine-tuning) for
   ``--teacher-arch`` -- this is the ablation's ``baseline`` system of that size;
2. the student's MASS pretraining (shared by every student system);
3. student fine-tuning (DAE + online BT, ``--updates`` updates), one per system:
   ``alone`` (the ablation's baseline), ``word_kd`` (``--criterion knowledge_distillation
   --teacher-path`` the teacher, Hinton et al. 2015), ``seq_kd`` (``smallcap-seqkd`` translates
   both monolingual corpora with the teacher, beam 4 as in the evaluation, and the student also trains on those pairs
   with ``--lambda-bp 1``; Kim & Rush 2016), ``curated`` (the ablation's ``all`` system: no
   teacher);
4. sacreBLEU on test_2016_flickr both ways (beam 4).

Prints a Markdown table: test BLEU both ways, their mean, the student's fine-tuning wall time, the
teacher's cost (its MASS + fine-tuning wall time, plus the seq-KD translation), and the total.
Results: ``WORK/kd_results.STUDENT_ARCH.seedSEED.json`` (one file per student and seed).
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import curation_ablation as ablation  # noqa: E402  (shared stages)

SYSTEMS = ("alone", "word_kd", "seq_kd", "curated")
ABLATION_RUNS = {"alone": "baseline", "curated": "all"}  # students that are curation_ablation runs (no teacher)


def train_teacher(args, work, base, static):
    """The teacher by the foundation recipe: the ablation's baseline system of its size."""
    mass_ckpt = ablation.mass_pretrain(args, work, base, args.teacher_arch, args.seed)
    result = ablation.finetune(args, work, base, static, args.teacher_arch, args.seed, "baseline", mass_ckpt)
    bleu = ablation.test_bleu(args, work, base, args.teacher_arch, args.seed, "baseline")
    mass_s = ablation.mass_wall_s(work, args.teacher_arch, args.seed)
    cost = None if mass_s is None else mass_s + result["finetune_wall_s"]
    ckpt = work / args.teacher_arch / f"seed{args.seed}" / "baseline" / "ckpt" / "checkpoint_best.pt"
    return ckpt, bleu, cost


def sequence_kd_data(args, work, base, teacher):
    """Both monolingual corpora translated by the teacher (beam 4), timed once."""
    dest = work / args.teacher_arch / f"seed{args.seed}" / "seqkd"
    done = dest / "seqkd.done.json"
    if not done.exists():
        start = time.time()
        ablation.sh([ablation.BIN / "smallcap-seqkd", base, "--path", teacher, "--dest", dest, "--beam", "4",
                     "--max-len-a", "1.3", "--max-len-b", "5",
                     *(["--cpu"] if args.cpu else [])], log=work / args.teacher_arch / f"seed{args.seed}" / "seqkd.log")
        done.write_text(json.dumps({"seqkd_wall_s": round(time.time() - start, 1)}))
    return dest, json.loads(done.read_text())["seqkd_wall_s"]


def student(args, work, base, static, system, mass_ckpt, teacher, seqkd):
    """Fine-tune one student system; returns its directory name, data and fine-tuning result."""
    arch, seed = args.student_arch, args.seed
    if system in ABLATION_RUNS:
        name = ABLATION_RUNS[system]
        return (name, ablation.system_data(name, base, static),
                ablation.finetune(args, work, base, static, arch, seed, name, mass_ckpt))
    if system == "word_kd":
        flags = ["--criterion", "knowledge_distillation", "--teacher-path", teacher,
                 "--kd-alpha", str(args.kd_alpha), "--kd-temperature", str(args.kd_temperature)]
    else:  # seq_kd
        flags = ["--lambda-bp", "1", "--back-parallel-data", seqkd]
    result = ablation.finetune(args, work, base, static, arch, seed, "baseline", mass_ckpt,
                               extra_flags=flags, name=f"{system}_{args.teacher_arch}")
    return f"{system}_{args.teacher_arch}", ablation.system_data("baseline", base, static), result


def minutes(seconds):
    return "n/a" if seconds is None else f"{seconds / 60:.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="output directory (re-running resumes; share it "
                        "with curation_ablation.py to reuse its runs)")
    parser.add_argument("--teacher-arch", default="smallcap_small", help="the teacher's Table 1 size "
                        "(smallcap_medium where a GPU is available)")
    parser.add_argument("--student-arch", default="smallcap_very_small")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kd-alpha", type=float, default=0.5, help="word-level KD: weight of the KD term")
    parser.add_argument("--kd-temperature", type=float, default=1.0, help="word-level KD: temperature")
    ablation.add_run_args(parser, SYSTEMS)
    args = parser.parse_args(argv)
    systems = ablation.parse_systems(parser, args.systems, SYSTEMS)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base, static = ablation.prepare_data(args, work)

    needs_teacher = any(s in ("word_kd", "seq_kd") for s in systems)
    teacher, teacher_bleu, teacher_cost = train_teacher(args, work, base, static) if needs_teacher else (None, None, None)
    seqkd, seqkd_s = sequence_kd_data(args, work, base, teacher) if "seq_kd" in systems else (None, None)
    mass_ckpt = ablation.mass_pretrain(args, work, base, args.student_arch, args.seed)
    rows = []
    for system in systems:
        name, data, result = student(args, work, base, static, system, mass_ckpt, teacher, seqkd)
        bleu = ablation.test_bleu(args, work, data, args.student_arch, args.seed, name)
        cost = 0.0 if system in ABLATION_RUNS else teacher_cost
        if system == "seq_kd" and cost is not None:
            cost += seqkd_s
        total = None if cost is None else cost + result["finetune_wall_s"]
        rows.append({"system": system, **bleu, "mean": (bleu["en-fr"] + bleu["fr-en"]) / 2,
                     "finetune_wall_s": result["finetune_wall_s"], "teacher_cost_s": cost, "total_s": total})
        (work / f"kd_results.{args.student_arch}.seed{args.seed}.json").write_text(json.dumps(
            {"args": vars(args), "teacher_bleu": teacher_bleu, "teacher_cost_s": teacher_cost,
             "seqkd_wall_s": seqkd_s, "rows": rows}, indent=2))

    if teacher_bleu:
        print(f"\nteacher {args.teacher_arch}: en→fr {teacher_bleu['en-fr']:.2f}, fr→en {teacher_bleu['fr-en']:.2f}, "
              f"trained in {minutes(teacher_cost)} min")
    print(f"\n| student {args.student_arch}, seed {args.seed} | en→fr | fr→en | mean | student fine-tuning (min) "
          f"| teacher cost (min) | total (min) |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['system']} | {r['en-fr']:.2f} | {r['fr-en']:.2f} | {r['mean']:.2f} | "
              f"{minutes(r['finetune_wall_s'])} | {minutes(r['teacher_cost_s'])} | {minutes(r['total_s'])} |")


if __name__ == "__main__":
    main()
