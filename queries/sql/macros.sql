-- cscale macros over the views of views.sql: STAC search semantics in plain SQL.
-- queries.connect loads them; in the duckdb CLI, open_store.sql reads this file after views.sql.
-- Spatial ones need the spatial extension (LOAD it from the duckdb-extension-spatial wheel, see README).
-- DuckDB binds a table macro when it is created: one over columns a version lacks is left out by
-- queries.connect, and stops the duckdb CLI (it exits at the first error), so search_datetime adds the optional
-- start_datetime/end_datetime columns (all NULL) to a version that has none.

-- Whether an item's bbox covering (the `bbox` struct) can meet the box xmin, ymin, xmax, ymax.
-- xmin > xmax is a box crossing the antimeridian; an item bbox with xmin > xmax crosses it too. Only the
-- covering columns are used, so DuckDB pushes the comparisons into the Parquet scan.
CREATE OR REPLACE MACRO cscale_bbox_hit(b, xmin, ymin, xmax, ymax) AS
  b.ymin <= ymax AND b.ymax >= ymin AND (
    CASE WHEN xmin <= xmax
      THEN (b.xmin <= b.xmax AND b.xmin <= xmax AND b.xmax >= xmin)
           OR (b.xmin > b.xmax AND (b.xmin <= xmax OR b.xmax >= xmin))
      ELSE b.xmin > b.xmax OR b.xmax >= xmin OR b.xmin <= xmax
    END);

-- The box as a geometry; a box crossing the antimeridian becomes its two halves.
CREATE OR REPLACE MACRO cscale_bbox_geometry(xmin, ymin, xmax, ymax) AS
  CASE WHEN xmin <= xmax THEN ST_MakeEnvelope(xmin, ymin, xmax, ymax)
       ELSE ST_Collect([ST_MakeEnvelope(xmin, ymin, 180, ymax), ST_MakeEnvelope(-180, ymin, xmax, ymax)])
  END;

-- STAC temporal match: an item matches by its datetime, or by its start/end range when datetime is null.
-- NULL bounds are open ends.
CREATE OR REPLACE MACRO cscale_in_interval(dt, sdt, edt, lo, hi) AS
  CASE WHEN dt IS NOT NULL
    THEN dt >= coalesce(lo::TIMESTAMPTZ, '-infinity'::TIMESTAMPTZ)
         AND dt <= coalesce(hi::TIMESTAMPTZ, 'infinity'::TIMESTAMPTZ)
    ELSE sdt <= coalesce(hi::TIMESTAMPTZ, 'infinity'::TIMESTAMPTZ)
         AND edt >= coalesce(lo::TIMESTAMPTZ, '-infinity'::TIMESTAMPTZ)
  END;

-- The href of an item's `self` link (NULL without one).
CREATE OR REPLACE MACRO cscale_self_href(links) AS
  list_filter(links, lambda l: l.rel = 'self')[1].href;

-- Items whose geometry intersects a box (STAC `bbox`, antimeridian-aware).
--   SELECT id, datetime FROM search_bbox(5, 45, 16, 48);   SELECT count(*) FROM search_bbox(170, -20, -170, -10);
CREATE OR REPLACE MACRO search_bbox(xmin, ymin, xmax, ymax) AS TABLE
  SELECT * FROM items
  WHERE cscale_bbox_hit(bbox, xmin, ymin, xmax, ymax)
    AND ST_Intersects(geometry, cscale_bbox_geometry(xmin, ymin, xmax, ymax));

-- Items in a datetime interval (STAC `datetime`); NULL for an open end.
--   SELECT id FROM search_datetime('2021-06-01', '2021-07-01');   SELECT id FROM search_datetime(NULL, '2019-01-01');
CREATE OR REPLACE MACRO search_datetime(lo, hi) AS TABLE
  SELECT * FROM (
    FROM items
    UNION ALL BY NAME
    SELECT NULL::TIMESTAMPTZ AS start_datetime, NULL::TIMESTAMPTZ AS end_datetime WHERE false)
  WHERE cscale_in_interval(datetime, start_datetime, end_datetime, lo, hi);

-- Every replica of the products some items belong to, with the provider and href of each.
--   SELECT * FROM replicas(['S2B_MSIL2A_20210101T153007_N0214_R068_T19SBR_20210101T203221']);
CREATE OR REPLACE MACRO replicas(item_ids) AS TABLE
  SELECT product_key, provider, federated_collection, id, cscale_self_href(links) AS href
  FROM items
  WHERE product_key IN (SELECT product_key FROM items WHERE list_contains(item_ids, id) AND product_key IS NOT NULL)
  ORDER BY product_key, provider;
