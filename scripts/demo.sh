#!/usr/bin/env bash
# `make demo`: a sample federation of three providers harvested into a local snapshot, then searched.
# Runs with the project's virtualenv first on PATH (the Makefile sets it).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${DEMO_OUT:-demo-out}
STORE="$OUT/store"
COUNT=${DEMO_COUNT:-6000}
rm -rf "$OUT"
mkdir -p "$OUT/input"

echo "== 1. generate a sample federation ($COUNT items: EODC, GRNET, CREODIAS; seeded)"
python scripts/sample_federation.py --out "$OUT/input" --count "$COUNT" --providers EODC,GRNET,CREODIAS --seed 42

echo
echo "== 2. ingest each provider into one versioned snapshot ($STORE)"
for provider in EODC GRNET CREODIAS; do
    cscale ingest "$OUT/input/$provider.ndjson" --provider "$provider" --store "$STORE" --format table \
        --max-quarantined 0.01
done

echo
echo "== 3. ingest EODC again: nothing changed, so no new version"
cscale ingest "$OUT/input/EODC.ndjson" --provider EODC --store "$STORE" --format table

echo
echo "== 4. federated search: Sentinel-2 L2A over the Alps in summer 2022, replicas merged by product key"
cscale sql --store "$STORE" --format table "
    SELECT product_key, count(DISTINCT provider) AS replicas,
           string_agg(DISTINCT provider, ', ' ORDER BY provider) AS providers,
           min(datetime) AS datetime, round(min(\"eo:cloud_cover\"), 1) AS cloud
    FROM items
    WHERE product_key LIKE 'S2%MSIL2A%'
      AND bbox.xmin <= 16 AND bbox.xmax >= 5 AND bbox.ymin <= 48 AND bbox.ymax >= 44
      AND datetime BETWEEN '2022-06-01' AND '2022-09-01'
    GROUP BY product_key ORDER BY datetime LIMIT 10"

echo
echo "== 5. which site holds what: products per provider, and how many are replicated elsewhere"
cscale sql --store "$STORE" --format table "
    WITH p AS (SELECT product_key, count(DISTINCT provider) AS n FROM items
               WHERE product_key IS NOT NULL GROUP BY ALL)
    SELECT i.provider, count(*) AS items, count(*) FILTER (WHERE p.n > 1) AS replicated
    FROM items i LEFT JOIN p USING (product_key) GROUP BY ALL ORDER BY ALL"

echo
echo "== 6. the snapshot"
cscale snapshots list --store "$STORE" --format table
cscale snapshots show --store "$STORE"
