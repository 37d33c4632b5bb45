"""What the example's tasks share: reading the CSV files, the features."""
import csv
import json
import os
import subprocess

NUMERIC = ["tenure", "monthly_charges", "support_calls"]
CATEGORICAL = ["plan", "region"]
LABEL = "churned"


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path, rows, fields):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def matrix(path):
    """X (numbers first, then categories, as a numpy object array) and y."""
    import numpy
    rows = read_rows(path)
    X = numpy.array([[float(r[k]) for k in NUMERIC] + [r[k] for k in CATEGORICAL]
                     for r in rows], dtype=object)
    y = numpy.array([int(r[LABEL]) for r in rows])
    return X, y


def model():
    """One-hot categories, scaled numbers, gradient boosting."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    n = len(NUMERIC)
    cats = list(range(n, n + len(CATEGORICAL)))
    return Pipeline([
        ("prep", ColumnTransformer([("num", StandardScaler(), list(range(n))),
                                    ("cat", OneHotEncoder(handle_unknown="ignore"), cats)])),
        ("clf", GradientBoostingClassifier(n_estimators=80, max_depth=3, random_state=0)),
    ])


def loom(*args):
    """Runs the loom CLI (on PATH; it finds loomd through LOOM_SERVER or
    LOOM_HOME in the agent's environment, which `loom up` passes to tasks;
    another agent needs --pass-env LOOM_SERVER) and returns its JSON."""
    out = subprocess.run(["loom", "--json"] + list(args), check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out) if out.strip() else None


def champion_file(name, dest):
    """Downloads a file of the current champion model's registering run;
    returns the champion's version, or None when there is none yet."""
    try:
        model = loom("models", "show", "churn")
    except subprocess.CalledProcessError:
        return None  # no model registered yet
    version = model["aliases"].get("champion")
    if not version:
        return None
    v = next(v for v in model["versions"] if v["version"] == version)
    subprocess.run(["loom", "artifacts", "get", str(v["run_id"]), v["task"], name, "-o", dest],
                   check=True)
    return version


def here(*parts):
    return os.path.join(os.getcwd(), *parts)
