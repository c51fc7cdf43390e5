-- Stand-in for a version without quarantined records: read_parquet needs one file at least, so views.sql reads this
-- table macro instead. Run before views.sql, by queries.connect and open_store.sql.
CREATE OR REPLACE MACRO cscale_empty_quarantine() AS TABLE
  SELECT NULL::VARCHAR AS provider, NULL::VARCHAR AS source_href, NULL::VARCHAR AS reason,
         NULL::VARCHAR AS message, NULL::VARCHAR AS item_id, NULL::VARCHAR AS raw, NULL::VARCHAR AS raw_hash
  WHERE false;
