-- The least cloudy Sentinel-2 L2A item per MGRS tile since 2021, whichever provider holds it.
SELECT * FROM (
  SELECT "grid:code" AS tile, provider, id, datetime, "eo:cloud_cover",
         row_number() OVER (PARTITION BY "grid:code" ORDER BY "eo:cloud_cover", datetime DESC) AS rank
  FROM search_datetime('2021-01-01', NULL)
  WHERE collection IN ('sentinel-2-l2a', 'SENTINEL2_L2A', 'sentinel2-l2a') AND "eo:cloud_cover" IS NOT NULL
)
WHERE rank = 1
ORDER BY "eo:cloud_cover", tile
LIMIT 25;
