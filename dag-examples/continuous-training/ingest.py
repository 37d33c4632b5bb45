#!/usr/bin/env python3
"""ingest: the newest labelled files (two by default) become this run's
data, split into train.csv and holdout.csv (80/20, seeded)."""
import glob
import os
import random
import sys

from common import LABEL, NUMERIC, CATEGORICAL, read_rows, write_rows

folder = sys.argv[1]
newest = int(os.environ.get("INGEST_FILES", "2"))
files = sorted(glob.glob(os.path.join(folder, "*.csv")))[-newest:]
if not files:
    sys.exit("ingest: no labelled files in %s" % folder)
rows = []
for path in files:
    rows += read_rows(path)
    print("ingest: %s" % os.path.basename(path))
random.Random(7).shuffle(rows)
cut = int(len(rows) * 0.8)
fields = NUMERIC + CATEGORICAL + [LABEL]
write_rows("train.csv", rows[:cut], fields)
write_rows("holdout.csv", rows[cut:], fields)
print("ingest: %d rows, %d for training, %d held out" % (len(rows), cut, len(rows) - cut))
