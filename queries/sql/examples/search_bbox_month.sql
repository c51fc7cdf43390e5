-- STAC search in plain SQL: items whose geometry meets a box, within a month, in one collection (at every
-- provider that has it), newest first. The box may cross the antimeridian (min x > max x). search_datetime has
-- start_datetime/end_datetime even on a store whose items have none.
-- Run after open_store.sql, from the repository root:
--   duckdb -cmd "LOAD '<spatial>'" -cmd "SET VARIABLE cscale_root = '/data/cscale'" \
--     -cmd ".read queries/sql/open_store.sql" < queries/sql/examples/search_bbox_month.sql
SELECT provider, collection, id, datetime, "eo:cloud_cover"
FROM search_datetime('2021-06-01T00:00:00Z', '2021-06-30T23:59:59Z')
WHERE cscale_bbox_hit(bbox, -180, -90, 180, 90)
  AND ST_Intersects(geometry, cscale_bbox_geometry(-180, -90, 180, 90))
  AND collection = 'sentinel-2-l2a'
ORDER BY datetime DESC
LIMIT 20;
