-- Stand-in for a version without any archive inventory: read_parquet needs one file at least, so views.sql reads
-- this table macro instead. Run before views.sql, by queries.connect and open_store.sql.
CREATE OR REPLACE MACRO cscale_empty_archive() AS TABLE
  SELECT NULL::VARCHAR AS site, NULL::VARCHAR AS bucket, NULL::VARCHAR AS key, NULL::BIGINT AS size,
         NULL::VARCHAR AS etag, NULL::TIMESTAMPTZ AS last_modified, NULL::VARCHAR AS storage_class,
         NULL::VARCHAR AS product, NULL::VARCHAR AS product_id, NULL::VARCHAR AS product_key,
         NULL::VARCHAR AS reason
  WHERE false;
