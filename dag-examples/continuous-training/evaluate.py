#!/usr/bin/env python3
"""evaluate: the candidate's AUC and accuracy on the held-out data, and the
current champion's AUC on the same rows (downloaded through the loom CLI),
so the gate compares like with like. Writes metrics.json and keeps the
training data as reference.csv (the monitor compares new data with it)."""
import json
import pickle
import shutil

from sklearn.metrics import accuracy_score, roc_auc_score

from common import champion_file, matrix

X, y = matrix("holdout.csv")
with open("model.pkl", "rb") as f:
    candidate = pickle.load(f)
auc = roc_auc_score(y, candidate.predict_proba(X)[:, 1])
acc = accuracy_score(y, candidate.predict(X))
champion_auc, version = 0.0, champion_file("model.pkl", "champion.pkl")
if version:
    with open("champion.pkl", "rb") as f:
        champion = pickle.load(f)
    champion_auc = roc_auc_score(y, champion.predict_proba(X)[:, 1])
metrics = {"auc": round(auc, 4), "accuracy": round(acc, 4),
           "champion_auc": round(champion_auc, 4), "rows": len(y)}
with open("metrics.json", "w") as f:
    json.dump(metrics, f)
shutil.copy("train.csv", "reference.csv")
print("evaluate: candidate auc %.4f, champion%s auc %.4f on the same %d rows" % (
    auc, " v%d" % version if version else " (none yet)", champion_auc, len(y)))
