CREATE OR REPLACE VIEW quarantine AS
  SELECT NULL::VARCHAR AS provider, NULL::VARCHAR AS source_href, NULL::VARCHAR AS reason,
         NULL::VARCHAR AS message, NULL::VARCHAR AS item_id, NULL::VARCHAR AS raw, NULL::VARCHAR AS raw_hash
  WHERE false;
