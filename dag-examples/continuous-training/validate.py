#!/usr/bin/env python3
"""validate: schema and quality; a failure fails the run, so a bad file
never trains a model. Checks the columns, row counts, missing values and
value ranges of every file given."""
import sys

from common import CATEGORICAL, LABEL, NUMERIC, read_rows

RANGES = {"tenure": (0, 120), "monthly_charges": (0, 500), "support_calls": (0, 50)}
problems = []
for path in sys.argv[1:]:
    rows = read_rows(path)
    if len(rows) < 200:
        problems.append("%s: %d rows, want at least 200" % (path, len(rows)))
        continue
    missing = [c for c in NUMERIC + CATEGORICAL + [LABEL] if c not in rows[0]]
    if missing:
        problems.append("%s: missing columns %s" % (path, ", ".join(missing)))
        continue
    for col in NUMERIC + CATEGORICAL + [LABEL]:
        empty = sum(1 for r in rows if r[col] in ("", "NA"))
        if empty > len(rows) * 0.01:
            problems.append("%s: %s is empty in %d rows" % (path, col, empty))
    for col, (lo, hi) in RANGES.items():
        bad = [r[col] for r in rows if r[col] not in ("", "NA") and not lo <= float(r[col]) <= hi]
        if bad:
            problems.append("%s: %s out of [%g, %g] in %d rows, e.g. %s" % (
                path, col, lo, hi, len(bad), bad[0]))
    if {r[LABEL] for r in rows} - {"0", "1"}:
        problems.append("%s: %s must be 0 or 1" % (path, LABEL))
    print("validate: %s: %d rows ok" % (path, len(rows)) if not problems else "")
if problems:
    print("\n".join("validate: " + p for p in problems), file=sys.stderr)
    sys.exit(1)
