#!/usr/bin/env python3
"""Synthetic customer-churn data for the continuous-training example.

generate.py OUT.csv [--rows N] [--seed S] [--shift] [--no-label]

Columns: tenure (months), monthly_charges, support_calls, plan, region and,
unless --no-label, churned (0/1). Seeded, so the same arguments give the
same file. --shift moves the world: prices rise, new customers dominate,
the cheap plan takes over, and what drives churn changes (price matters
more, support calls less) -- a model trained before the shift does worse.
"""
import argparse
import csv
import math
import os
import random


def row(rng, shift):
    if shift:
        tenure = max(0, int(rng.expovariate(1 / 10)))
        charges = rng.gauss(95, 25)
        plan = rng.choices(["basic", "standard", "premium"], [0.7, 0.2, 0.1])[0]
    else:
        tenure = max(0, int(rng.expovariate(1 / 30)))
        charges = rng.gauss(65, 20)
        plan = rng.choices(["basic", "standard", "premium"], [0.3, 0.45, 0.25])[0]
    tenure = min(tenure, 120)
    charges = round(min(max(charges, 10.0), 300.0), 2)
    calls = min(int(rng.expovariate(1 / 1.5)), 20)
    region = rng.choice(["north", "south", "east", "west"])
    if shift:
        z = -1.5 + 0.045 * (charges - 80) - 0.03 * tenure + 0.05 * calls + (
            0.8 if plan == "basic" else 0.0)
    else:
        z = -1.0 + 0.01 * (charges - 65) - 0.05 * tenure + 0.45 * calls - (
            0.6 if plan == "premium" else 0.0)
    churned = 1 if rng.random() < 1 / (1 + math.exp(-z)) else 0
    return [tenure, charges, calls, plan, region, churned]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shift", action="store_true")
    ap.add_argument("--no-label", action="store_true")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    header = ["tenure", "monthly_charges", "support_calls", "plan", "region", "churned"]
    # Written beside the target and renamed in: a watched folder sees one
    # complete file, never a half-written one.
    tmp = os.path.join(os.path.dirname(os.path.abspath(a.out)), "." + os.path.basename(a.out))
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header[:-1] if a.no_label else header)
        for _ in range(a.rows):
            r = row(rng, a.shift)
            w.writerow(r[:-1] if a.no_label else r)
    os.rename(tmp, a.out)


if __name__ == "__main__":
    main()
