#!/usr/bin/env bash
# The whole thing on one machine: set up, generate a synthetic retailer's landing files, run the
# pipeline (landing -> bronze -> silver -> gold) and the analyses (cohorts, baskets, uplift, drivers,
# interventions) with the local configuration, write the insight report, and say where everything is. Safe to run again: existing sample data
# is reused and the rerun changes no data table (the platform tables record the run).
#
#   bash scripts/demo.sh                 # sample data at scale 0.2 (~20k transaction lines)
#   CPBI_SCALE=1 bash scripts/demo.sh    # ~100k lines; needs an empty ./cpbi-data (see below)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
DATA=./cpbi-data            # conf/base/project.yaml: storage.landing = ./cpbi-data/landing
SEED=42
SCALE="${CPBI_SCALE:-0.2}"

say() { printf '\n==> %s\n' "$*"; }

say "1/4 setup (scripts/setup.sh)"
bash scripts/setup.sh
PY=.venv/bin/python
CPBI=.venv/bin/cpbi
export PYSPARK_PYTHON="$ROOT/$PY"

say "2/4 sample data in $DATA"
if [ -f "$DATA/manifest.json" ]; then
    # The generator refuses to add files made with other parameters to an existing batch, so an
    # existing batch is reused as it is.
    read -r have_seed have_scale < <("$PY" -c '
import json, sys
m = json.load(open(sys.argv[1], encoding="utf-8"))
print(m.get("seed"), m.get("scale"))' "$DATA/manifest.json")
    same=$("$PY" -c 'import sys; print(int(float(sys.argv[1]) == float(sys.argv[2]) and sys.argv[3] == sys.argv[4]))' \
        "$have_scale" "$SCALE" "$have_seed" "$SEED")
    used_scale="$have_scale"
    if [ "$same" = 1 ]; then
        echo "already generated (scale $have_scale, seed $have_seed): $DATA/manifest.json; not regenerating"
    elif [ -n "${CPBI_SCALE:-}" ]; then
        echo "error: $DATA holds data generated with scale $have_scale, seed $have_seed, but CPBI_SCALE=$SCALE." >&2
        echo "       Remove $DATA (rm -rf $DATA) to start over at the new scale, or unset CPBI_SCALE." >&2
        exit 1
    else
        echo "reusing the existing data (scale $have_scale, seed $have_seed) in $DATA"
    fi
else
    "$CPBI" generate --scale "$SCALE" --seed "$SEED" --out "$DATA"
    used_scale="$SCALE"
fi

say "3/4 pipeline and analyses: cpbi run all --env local"
"$CPBI" run all --env local

say "4/4 insight report: cpbi report --env local"
report=$("$CPBI" report --env local | sed -n 's/^report: //p')

lake="$ROOT/cpbi-data/lakehouse"
outputs="$ROOT/cpbi-data/outputs"
if [ -n "${MLFLOW_TRACKING_URI:-}" ]; then
    mlflow_store="$MLFLOW_TRACKING_URI (from MLFLOW_TRACKING_URI)"
    mlflow_ui=".venv/bin/mlflow ui --backend-store-uri $MLFLOW_TRACKING_URI"
else
    mlflow_store="sqlite:///$outputs/mlruns/mlflow.db"
    mlflow_ui=".venv/bin/mlflow ui --backend-store-uri $mlflow_store"
fi
cat <<EOF

==> where things are
  landing files (input):   $ROOT/cpbi-data/landing   (+ manifest.json: what the generator planted)
  lakehouse (Delta):       $lake/<layer>/customer_purchase_behavior_insights_<table>
  run outputs:             $outputs
  MLflow runs:             $mlflow_store
                           browse them: $mlflow_ui
  table catalog:           docs/tables.md
  analyses (docs):         docs/cohorts.md, docs/baskets.md, docs/uplift.md, docs/interventions.md;
                           metric definitions: docs/metrics.md; platform records: docs/platform.md
  insight report (HTML):   $report
                           open it in a browser (docs/report.md)

==> next
  the dashboard:           .venv/bin/cpbi dashboard --env local     then open http://127.0.0.1:8501 (docs/dashboard.md)
  the ranked actions:      .venv/bin/cpbi sql --env local "SELECT rank, action, expected_value, ci_low, ci_high FROM recommended_interventions ORDER BY rank LIMIT 10"
  list tables again:       .venv/bin/cpbi tables --env local
  the last runs:           .venv/bin/cpbi status --env local --last 3
  query as an analyst:     .venv/bin/cpbi sql --env local "SELECT antecedent_names, consequent_names, lift FROM basket_rules WHERE level = 'product' AND segment_key = 'all' ORDER BY rule_rank LIMIT 10"
  add a later delivery:    .venv/bin/cpbi generate --batch 2 --scale $used_scale --seed $SEED --out $DATA
                           .venv/bin/cpbi run all --env local
  run the tests:           bash scripts/test.sh
EOF
