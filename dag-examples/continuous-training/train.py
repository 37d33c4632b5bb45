#!/usr/bin/env python3
"""train: a scikit-learn pipeline (one-hot categories, scaled numbers,
gradient boosting) on train.csv, saved as model.pkl."""
import pickle
import sys

from common import matrix, model

X, y = matrix(sys.argv[1])
m = model()
m.fit(X, y)
with open("model.pkl", "wb") as f:
    pickle.dump(m, f)
print("train: fitted on %d rows" % len(y))
