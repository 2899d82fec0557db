#!/usr/bin/env bash
# Plain cron alternative to the Airflow DAG: the daily cpbi run, one spark-submit per job.
#   crontab -e
#   0 3 * * *  /opt/cpbi/scripts/schedule/cpbi_daily.sh >> /var/log/cpbi/daily.log 2>&1
# Settings from the environment: CPBI_MASTER (default local[2]), CPBI_ENV (default local),
# CPBI_MAINTAIN_WEEKDAY (the ISO day of the weekly table upkeep, default 7 = Sunday).
# The stages stop at the first failure (set -e); rerunning the script is safe: every stage is idempotent.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PYSPARK_PYTHON="$PWD/.venv/bin/python"
MASTER="${CPBI_MASTER:-local[2]}"
ENV="${CPBI_ENV:-local}"
# one run at a time: two runs must not write the same tables at once
exec 9>"${TMPDIR:-/tmp}/cpbi_daily.lock"
flock -n 9 || { echo "cpbi_daily: another run holds the lock; exiting"; exit 0; }

for job in ingest_bronze bronze_to_silver silver_to_gold cohorts baskets "uplift uplift" "uplift drivers" interventions; do
    read -r file analysis <<< "$job"   # jobs/uplift.py runs the analysis named after it: uplift or drivers
    echo "$(date -u +%FT%TZ) cpbi_daily: $job"
    # shellcheck disable=SC2086  # $analysis is empty or one word
    .venv/bin/spark-submit --master "$MASTER" --conf spark.log.level=WARN "jobs/$file.py" $analysis --env "$ENV"
done
echo "$(date -u +%FT%TZ) cpbi_daily: report"
.venv/bin/cpbi report --env "$ENV"
# Once a week (CPBI_MAINTAIN_WEEKDAY, ISO day, default 7 = Sunday), under the same lock: table upkeep.
if [ "$(date -u +%u)" = "${CPBI_MAINTAIN_WEEKDAY:-7}" ]; then
    echo "$(date -u +%FT%TZ) cpbi_daily: maintain_tables"
    .venv/bin/spark-submit --master "$MASTER" --conf spark.log.level=WARN jobs/maintain_tables.py --env "$ENV"
fi
echo "$(date -u +%FT%TZ) cpbi_daily: done"
