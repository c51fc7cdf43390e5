-- STAC search in plain SQL: items whose geometry meets a box, within a month, in one collection (at every
-- provider that has it), newest first. The box may cross the antimeridian (min x > max x).
-- Run after open_store.sql:  duckdb -cmd "SET VARIABLE cscale_root = '/data/cscale'" \
--   -init queries/sql/open_store.sql < queries/sql/examples/search_bbox_month.sql
SELECT provider, collection, id, datetime, "eo:cloud_cover"
FROM search_bbox(-180, -90, 180, 90)
WHERE cscale_in_interval(datetime, start_datetime, end_datetime,
                         '2021-06-01T00:00:00Z', '2021-06-30T23:59:59Z')
  AND collection = 'sentinel-2-l2a'
ORDER BY datetime DESC
LIMIT 20;
