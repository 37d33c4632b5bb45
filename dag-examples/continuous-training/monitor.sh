#!/bin/sh
# monitor: compares the newest production data (features only) with the
# champion's training data, and sends the report to loomd as the event
# churn-drift -- every check, drifting or not, so `consecutive` could count.
set -eu
scoring="$1"
latest=$(ls -1 "$scoring"/*.csv 2>/dev/null | sort | tail -n 1)
[ -n "$latest" ] || { echo "monitor: no data in $scoring yet"; exit 0; }
/usr/bin/python3 -c 'from common import champion_file; import sys; sys.exit(0 if champion_file("reference.csv", "reference.csv") else 3)' ||
    { echo "monitor: no champion yet"; exit 0; }
echo "monitor: $(basename "$latest") against the champion's training data"
status=0
loom drift reference.csv "$latest" --columns tenure,monthly_charges,support_calls,plan,region \
    --emit churn-drift || status=$?
# 0: no drift, 1: drift (both are fine answers); 2 or more: the check failed.
[ "$status" -le 1 ]
