"""Stickiness of the router's split, checked with its own code (`flywheel_router.choose` on a CompiledRoute).

For `--keys` sticky keys and rising candidate weights (5 -> 10 -> 25 -> 50 %): the candidate share at each
weight against the binomial 99% interval, and how many keys change version at each step (as the weight
rises a key may only move stable -> candidate, never back). Each decision is also recomputed from
`ring_point(key, salt) < threshold(steps)` to show `choose` is exactly the ring. `--predict` prints which
of the first keys the router should send to the candidate at given weights, for run.py to compare with
what the router process answers.

    services/router/.venv/bin/python bench/router/split_check.py [--keys 100000] [--weights 5,10,25,50]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from flywheel_contracts import Route
from flywheel_router import CompiledRoute, choose, ring_point, threshold

sys.path.insert(0, str(Path(__file__).resolve().parent))
import binomial  # noqa: E402

STICKY_HEADER = "x-card-id"


def route(weight: float, stable: str = "v1", candidate: str = "v2") -> CompiledRoute:
    return CompiledRoute.of(
        Route.model_validate(
            {
                "model": "fraud",
                "stable": {"version": stable},
                "candidate": {"version": candidate},
                "candidateWeight": weight,
                "stickiness": {"header": STICKY_HEADER},
            }
        )
    )


def key(i: int) -> bytes:
    return f"card-{i:07d}".encode()


def candidates(weight: float, keys: int, rng: random.Random, candidate: str) -> tuple[set[int], int]:
    """Indices of the keys `choose` sends to the candidate, and how many disagree with the ring directly."""
    compiled = route(weight, "v0" if candidate == "v1" else "v1", candidate)
    bound = threshold(compiled.route.weight_steps)
    chosen, disagree = set(), 0
    for i in range(keys):
        k = key(i)
        to_candidate = choose(compiled, None, k, rng).role == "candidate"
        if to_candidate != (ring_point(k, compiled.salt) < bound):
            disagree += 1
        if to_candidate:
            chosen.add(i)
    return chosen, disagree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--weights", default="5,10,25,50")
    parser.add_argument("--candidate", default="v2", help="the candidate's version (it salts the hash ring)")
    parser.add_argument(
        "--predict", default="", help="weights at which to list the candidate keys among --predict-keys"
    )
    parser.add_argument("--predict-keys", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(1)
    weights = [float(w) for w in args.weights.split(",")]
    started = time.perf_counter()
    steps, previous, levels = [], None, []
    for weight in weights:
        chosen, disagree = candidates(weight, args.keys, rng, args.candidate)
        levels.append(binomial.check(len(chosen), args.keys, weight) | {"disagree_with_ring": disagree})
        if previous is not None:
            steps.append(
                {
                    "from_percent": previous[0],
                    "to_percent": weight,
                    "stable_to_candidate": len(chosen - previous[1]),
                    "candidate_to_stable": len(previous[1] - chosen),
                    "expected_stable_to_candidate": round(args.keys * (weight - previous[0]) / 100),
                }
            )
        previous = (weight, chosen)
    result = {
        "method": "flywheel_router.choose on CompiledRoute (sticky header), cross-checked with ring_point < threshold",
        "keys": args.keys,
        "levels": levels,
        "steps": steps,
        "monotone": all(s["candidate_to_stable"] == 0 for s in steps),
        "seconds": round(time.perf_counter() - started, 2),
    }
    if args.predict:
        result["predicted"] = {
            w: sorted(candidates(float(w), args.predict_keys, rng, args.candidate)[0]) for w in args.predict.split(",")
        }
        result["predict_keys"] = args.predict_keys
    print(json.dumps(result))


if __name__ == "__main__":
    main()
