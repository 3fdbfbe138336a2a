"""How well mini-GenEval judges: accuracy on ground truth and false positives on other prompts.

Ground-truth images from the shapes generator are judged against their own captions
(accuracy per category: the share judged correct) and against another caption (a category
drawn uniformly, then one of the prompts the world can phrase in it): the false-positive
rate is the share judged correct among those whose drawn objects do NOT satisfy it.

    .venv/bin/python benchmarks/mini_geneval_accuracy.py [--images 3000] [--seed 7]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from generation.shapes_world import shapes
from generation.shapes_world.geneval import detect, evaluate, ground_truth_detections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    samples = shapes.training_samples(args.images, seed=args.seed)
    spaces = {c: shapes.prompt_space(c) for c in shapes.CATEGORIES}
    rng = np.random.default_rng(args.seed)
    own: dict[str, list[bool]] = defaultdict(list)
    false_positive: dict[str, list[bool]] = defaultdict(list)
    start = time.perf_counter()
    for sample in samples:
        detections = detect(sample.image())
        own[sample.tag].append(evaluate(detections, sample.metadata)[0])
        space = spaces[shapes.CATEGORIES[rng.integers(len(shapes.CATEGORIES))]]
        other = space[rng.integers(len(space))]
        if not evaluate(ground_truth_detections(sample.shapes), other)[0]:
            false_positive[other["tag"]].append(evaluate(detections, other)[0])
    seconds = time.perf_counter() - start

    print(f"{len(samples)} ground-truth images, seed {args.seed}, {seconds:.1f} s")
    print(
        "| category | accuracy on own caption | images | false positives on another caption | judged |"
    )
    print("|---|---:|---:|---:|---:|")
    for category in shapes.CATEGORIES:
        acc, fp = own[category], false_positive[category]
        print(
            f"| {category} | {np.mean(acc):.4f} | {len(acc)} | "
            f"{np.mean(fp) if fp else float('nan'):.4f} | {len(fp)} |"
        )
    overall = np.mean([np.mean(v) for v in own.values()])
    fp_all = [x for v in false_positive.values() for x in v]
    print(
        f"| **overall (mean of task means)** | **{overall:.4f}** | {sum(map(len, own.values()))} | "
        f"{np.mean(fp_all):.4f} | {len(fp_all)} |"
    )


if __name__ == "__main__":
    main()
