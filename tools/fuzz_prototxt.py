"""Run the prototxt mutation fuzzer for many cases and count the outcomes.

    PYTHONPATH=. python tools/fuzz_prototxt.py --cases 5000 --seed 1

Each case: a seed prototxt from Caffe's examples (../shared/caffe-models) or models/, a few
random mutations (tests/bad_inputs/fuzzing.py), then reading, building and running it. Prints
how many cases ended fine, how many with each protonet error class, and every case that ended
in anything else (a stray exception or a hang), with the seed and mutations to replay it.
Exits 1 when any case did.
"""
from __future__ import annotations

import argparse
import collections
import random
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bad_inputs.fuzzing import KINDS, corpus, mutate, outcome  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=4, help="mutations per case, at most")
    parser.add_argument("--kinds", default=",".join(sorted(set(KINDS))),
                        help="comma-separated mutation kinds to draw from (default: all)")
    args = parser.parse_args(argv)
    kinds = [k for k in KINDS if k in args.kinds.split(",")]
    warnings.simplefilter("ignore", RuntimeWarning)   # NaN arithmetic in fuzzed nets
    seeds = corpus()
    if not seeds:
        print("no seed prototxts found", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    counts: collections.Counter[str] = collections.Counter()
    failures = []
    start = time.perf_counter()
    slowest = (0.0, None)
    for case in range(args.cases):
        seed = rng.choice(seeds)
        steps = [(rng.choice(kinds), rng.randrange(10**6), rng.randrange(10**6))
                 for _ in range(rng.randint(1, args.max_steps))]
        text = mutate(seed.text, steps)
        t0 = time.perf_counter()
        try:
            counts[outcome(seed, text)] += 1
        except TimeoutError:
            counts["HANG"] += 1
            failures.append((case, seed.name, steps, "hang"))
        except Exception as e:  # noqa: BLE001 - counting every kind of bug is the point
            counts["STRAY " + type(e).__name__] += 1
            failures.append((case, seed.name, steps, traceback.format_exc(limit=-3)))
        took = time.perf_counter() - t0
        if took > slowest[0]:
            slowest = (took, (case, seed.name, steps))
        if (case + 1) % 500 == 0:
            print(f"{case + 1} cases, {time.perf_counter() - start:.0f} s: {dict(counts)}",
                  flush=True)
    elapsed = time.perf_counter() - start
    print(f"\n{args.cases} cases from {len(seeds)} seeds in {elapsed:.0f} s "
          f"(seed {args.seed}); slowest case {slowest[0]:.1f} s: {slowest[1]}")
    for name, n in counts.most_common():
        print(f"  {n:6d}  {name}")
    stray = sum(n for k, n in counts.items() if k.startswith("STRAY") or k == "HANG")
    print(f"non-protonet exceptions and hangs: {stray}")
    for case, name, steps, detail in failures[:30]:
        print(f"\n--- case {case}: {name} {steps}\n{detail}")
    return 1 if stray else 0


if __name__ == "__main__":
    sys.exit(main())
