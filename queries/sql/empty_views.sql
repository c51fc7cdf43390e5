-- Stand-ins for a version without items or without quarantined records (read_parquet needs one file at least).
CREATE OR REPLACE VIEW items AS
  SELECT NULL::VARCHAR AS id, NULL::VARCHAR AS provider, NULL::VARCHAR AS collection,
         NULL::TIMESTAMPTZ AS datetime, NULL::VARCHAR AS product_key, NULL::VARCHAR AS content_hash,
         NULL::VARCHAR AS federated_collection
  WHERE false;
