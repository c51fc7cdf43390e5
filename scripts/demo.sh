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
echo "== 4. federated search: Sentinel-2 L2A over Europe in 2022, replicas merged by product key"
export CSCALE_CACHE_DIR="$OUT/search-cache"
cscale search --store "$STORE" --prepare   # once per version, e.g. in the harvest's cron job
cscale search --store "$STORE" --bbox -10,35,30,60 --datetime 2022-01-01/2022-12-31 \
    --collections sentinel-2-l2a,SENTINEL2_L2A --limit 10 --format table
echo "   ... and the same question in SQL:"
cscale sql --store "$STORE" --format table "
    SELECT product_key, count(DISTINCT provider) AS replicas,
           string_agg(DISTINCT provider, ', ' ORDER BY provider) AS providers,
           min(datetime) AS datetime, round(min(\"eo:cloud_cover\"), 1) AS cloud
    FROM items
    WHERE product_key LIKE 'S2%MSIL2A%'
      AND bbox.xmin <= 30 AND bbox.xmax >= -10 AND bbox.ymin <= 60 AND bbox.ymax >= 35
      AND datetime >= '2022-01-01' AND datetime < '2023-01-01'
    GROUP BY product_key ORDER BY datetime DESC LIMIT 10"

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

echo
echo "== 7. publish the snapshot as static STAC ($OUT/catalog), then again: nothing changed, nothing rewritten"
cscale -q publish --store "$STORE" --out "$OUT/catalog" --format json > "$OUT/publish-1.json"
cscale -q publish --store "$STORE" --out "$OUT/catalog" --format json > "$OUT/publish-2.json"
python - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
first, again = (json.loads((out / f"publish-{n}.json").read_text())[0] for n in (1, 2))
print(f"published version {first['version']}: {first['items_written']:,} items, {first['catalogs']:,} catalogs and "
      f"collections, {first['parts_copied']} parquet parts in {first['seconds']:.1f} s -> {out / 'catalog/catalog.json'}")
print(f"republished: {again['items_written']} items and {again['catalogs_written']} catalogs rewritten, "
      f"{again['items_unchanged']:,} unchanged, in {again['seconds']:.1f} s")
PY

echo
echo "== 8. an S3 archive site: moto's S3 server on 127.0.0.1 holding zipped SAFE under date folders (as EODC)"
echo "      and SAFE folders (as INCD), indexed into the same snapshot as provider EODC-S3"
PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_DEFAULT_REGION=us-east-1
moto_server -H 127.0.0.1 -p "$PORT" > "$OUT/moto.log" 2>&1 &
MOTO_PID=$!
trap 'kill "$MOTO_PID" 2>/dev/null || true' EXIT
python - "http://127.0.0.1:$PORT" "$OUT/input/EODC.ndjson" "${CSCALE_CORPUS:-../shared/corpus}" <<'PY'
import io, sys, time, zipfile
from pathlib import Path

import boto3, orjson
from botocore.config import Config

endpoint, federation, corpus = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}))
for _ in range(150):  # moto_server takes a moment to start
    try:
        s3.create_bucket(Bucket="demo-archive")
        break
    except Exception:
        time.sleep(0.2)
else:
    sys.exit("moto_server did not start; see moto.log")

MANIFEST = """<?xml version="1.0" encoding="UTF-8"?>
<xfdu:XFDU xmlns:xfdu="urn:ccsds:schema:xfdu:1" xmlns:safe="http://www.esa.int/safe/sentinel-1.0"
 xmlns:s1="http://www.esa.int/safe/sentinel-1.0/sentinel-1" xmlns:gml="http://www.opengis.net/gml"><metadataSection>
 <safe:platform><safe:familyName>SENTINEL-1</safe:familyName><safe:number>{number}</safe:number></safe:platform>
 <safe:acquisitionPeriod><safe:startTime>{start}</safe:startTime><safe:stopTime>{stop}</safe:stopTime></safe:acquisitionPeriod>
 <safe:orbitReference><safe:orbitNumber type="start">{orbit}</safe:orbitNumber>
  <safe:relativeOrbitNumber type="start">{relative}</safe:relativeOrbitNumber><s1:pass>{direction}</s1:pass></safe:orbitReference>
 <safe:frameSet><safe:frame><safe:footPrint><gml:coordinates>{footprint}</gml:coordinates></safe:footPrint></safe:frame></safe:frameSet>
</metadataSection></xfdu:XFDU>"""


def zipped(name, files):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files:
            archive.writestr(f"{name}/{path}", data)
    return buffer.getvalue()


def day(name):
    stamp = next(p for p in name.split("_") if len(p) == 15 and p[8] == "T")
    return f"{stamp[:4]}/{stamp[4:6]}/{stamp[6:8]}"


count = 0
# replicas of Sentinel-1 products the EODC STAC catalogue of the sample federation lists (generated metadata)
for line in federation.read_bytes().splitlines():
    item = orjson.loads(line)
    if not item["id"].startswith("S1") or count >= 40:
        continue
    p = item["properties"]
    ring = item["geometry"]["coordinates"][0][:-1]
    manifest = MANIFEST.format(
        number=p["platform"][-1].upper(), start=p["start_datetime"].rstrip("Z"), stop=p["end_datetime"].rstrip("Z"),
        orbit=p["sat:absolute_orbit"], relative=p["sat:relative_orbit"], direction=p["sat:orbit_state"].upper(),
        footprint=" ".join(f"{lat},{lon}" for lon, lat in ring),
    )
    name = item["id"] + ".SAFE"
    body = zipped(name, [("manifest.safe", manifest), ("measurement/placeholder.tiff", b"demo")])
    s3.put_object(Bucket="demo-archive", Key=f"s1a_csar_grdh_iw/{day(name)}/{name}.zip", Body=body)
    count += 1
# real products with their real metadata, when the shared corpus is here
for manifest in sorted(corpus.glob("sentinel/sentinel1/*/*/manifest.safe")):
    name = manifest.parent.name if manifest.parent.name.endswith(".SAFE") else manifest.parent.name + ".SAFE"
    files = [(p.relative_to(manifest.parent).as_posix(), p.read_bytes()) for p in manifest.parent.rglob("*") if p.is_file()]
    s3.put_object(Bucket="demo-archive", Key=f"s1a_csar_grdh_iw/{day(name)}/{name}.zip", Body=zipped(name, files))
    count += 1
for folder in sorted(p.parent for p in corpus.glob("sentinel/sentinel2/*.SAFE/manifest.safe")):
    name = folder.name.removeprefix("esa_")
    for path in folder.rglob("*"):
        if path.is_file() and path.name != "expected_output.json":
            key = f"incd/sentinel-2/{day(name)}/{name}/{path.relative_to(folder).as_posix()}"
            s3.put_object(Bucket="demo-archive", Key=key, Body=path.read_bytes())
    count += 1
s3.put_object(Bucket="demo-archive", Key="incd/README.txt", Body=b"not a product: indexed with a reason")
print(f"filled s3://demo-archive with {count} products")
PY
cscale archive index s3://demo-archive/ --site EODC-S3 --store "$STORE" --endpoint-url "http://127.0.0.1:$PORT" \
    --format table
echo "-- indexed again: nothing changed, so no new version"
cscale archive index s3://demo-archive/ --site EODC-S3 --store "$STORE" --endpoint-url "http://127.0.0.1:$PORT" \
    --format table
cscale sql --store "$STORE" --format table "
    SELECT collection, count(*) AS items, count(geometry) AS with_footprint, sum(\"archive:bytes\")::BIGINT AS bytes
    FROM items WHERE provider = 'EODC-S3' GROUP BY ALL ORDER BY ALL"
cscale sql --store "$STORE" --format table "
    SELECT coalesce(reason, 'in a product') AS object, count(*) AS objects, sum(size)::BIGINT AS bytes
    FROM archive_objects GROUP BY ALL ORDER BY ALL"
cscale sql --store "$STORE" --format table "
    SELECT product_key, string_agg(DISTINCT provider, ', ' ORDER BY provider) AS held_by
    FROM items WHERE product_key IN (SELECT product_key FROM archive_objects)
    GROUP BY ALL HAVING count(DISTINCT provider) > 1 ORDER BY product_key LIMIT 5"
kill "$MOTO_PID" 2>/dev/null || true
wait "$MOTO_PID" 2>/dev/null || true
trap - EXIT

echo
echo "== 9. a static-catalog provider: CESNET publishes a static STAC tree (root → collections → months → items),"
echo "      served over HTTP on 127.0.0.1 and harvested into the same snapshot"
python scripts/sample_federation.py --single-file "$OUT/input/CESNET.ndjson" --providers CESNET --count 1500 --seed 7
python scripts/bench/bench_static.py --input "$OUT/input/CESNET.ndjson" --write-tree "$OUT/cesnet-stac"
HTTP_PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python -m http.server "$HTTP_PORT" --bind 127.0.0.1 --directory "$OUT/cesnet-stac" > "$OUT/http.log" 2>&1 &
HTTP_PID=$!
trap 'kill "$HTTP_PID" 2>/dev/null || true' EXIT
URL="http://127.0.0.1:$HTTP_PORT/catalog.json"
python - "$URL" <<'PY'
import sys, time, urllib.request
for _ in range(100):  # the server takes a moment to start
    try:
        urllib.request.urlopen(sys.argv[1], timeout=1).read()
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("the HTTP server did not start; see http.log")
PY
cscale harvest static "$URL" --provider CESNET --store "$STORE" --format table
echo "-- harvested again: every document answers 304 Not Modified, so no new version"
cscale harvest static "$URL" --provider CESNET --store "$STORE" --format table
echo "-- upstream, one item leaves its monthly catalog: the next harvest reads that catalog and deletes the item"
python - "$OUT/cesnet-stac" <<'PY'
import json, pathlib, sys
month = sorted(pathlib.Path(sys.argv[1]).glob("*/*/catalog.json"))[0]
catalog = json.loads(month.read_text())
link = next(link for link in catalog["links"] if link["rel"] == "item")
catalog["links"].remove(link)
month.write_text(json.dumps(catalog))
(month.parent / link["href"]).unlink()
print(f"removed {link['href']} from {month.relative_to(sys.argv[1])}")
PY
cscale harvest static "$URL" --provider CESNET --store "$STORE" --format table
cscale sql --store "$STORE" --format table "
    SELECT provider, collection, count(*) AS items, min(datetime)::DATE AS first, max(datetime)::DATE AS last
    FROM items WHERE provider = 'CESNET' GROUP BY ALL ORDER BY ALL"
kill "$HTTP_PID" 2>/dev/null || true
wait "$HTTP_PID" 2>/dev/null || true
trap - EXIT

echo
echo "== 10. a STAC API provider: INCD serves its catalogue with \`rustac serve\` on 127.0.0.1, harvested with"
echo "       \`cscale harvest api\` (each collection's time range split into windows paged in parallel)"
python scripts/sample_federation.py --single-file "$OUT/input/INCD.ndjson" --providers INCD --count 2000 --seed 11
API_PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rustac serve "$OUT/input/INCD.ndjson" --create-collections -a "127.0.0.1:$API_PORT" > "$OUT/rustac.log" 2>&1 &
API_PID=$!
trap 'kill "$API_PID" 2>/dev/null || true' EXIT
API="http://127.0.0.1:$API_PORT"
python - "$API" <<'PY'
import sys, time, urllib.request
for _ in range(100):  # rustac serve takes a moment to load the file
    try:
        urllib.request.urlopen(sys.argv[1], timeout=1).read()
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("rustac serve did not start; see rustac.log")
PY
cscale harvest api "$API" --provider INCD --store "$STORE" --limit 100 --format table
echo "-- harvested again: incremental from each collection's watermark (datetime, 2 days of lag): no new version"
cscale harvest api "$API" --provider INCD --store "$STORE" --limit 100 --format table
cscale sql --store "$STORE" --format table "
    SELECT c.key AS collection, c.value ->> 'mode' AS mode, (c.value ->> 'windows')::INT AS windows,
           (c.value ->> 'pages')::INT AS pages, (c.value ->> 'items')::INT AS items
    FROM runs, json_each(run -> 'collections') AS c
    WHERE version = (SELECT max(version) FROM runs WHERE kind = 'api') ORDER BY collection"
kill "$API_PID" 2>/dev/null || true
wait "$API_PID" 2>/dev/null || true
trap - EXIT
