-- Stand-in for a version without items: read_parquet needs one file at least, so views.sql reads this table macro
-- instead (the `items` view adds `federated_collection`). Run before views.sql, by queries.connect and open_store.sql.
-- The columns every part has (but `assets`, whose type is each provider's own), so that macros.sql binds.
CREATE OR REPLACE MACRO cscale_empty_items() AS TABLE
  SELECT NULL::VARCHAR AS "type", NULL::VARCHAR AS stac_version, NULL::VARCHAR AS id, NULL::GEOMETRY AS geometry,
         NULL::STRUCT(xmin DOUBLE, ymin DOUBLE, xmax DOUBLE, ymax DOUBLE) AS bbox,
         NULL::STRUCT(rel VARCHAR, href VARCHAR)[] AS links, NULL::VARCHAR AS collection,
         NULL::TIMESTAMPTZ AS datetime, NULL::VARCHAR AS provider, NULL::VARCHAR AS product_key,
         NULL::VARCHAR AS content_hash, NULL::VARCHAR AS source_href, NULL::VARCHAR AS "cscale:overflow"
  WHERE false;
