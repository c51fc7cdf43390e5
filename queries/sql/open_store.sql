-- For the plain duckdb CLI: point cscale's views at a store, then run views.sql.
--   duckdb -cmd "SET VARIABLE cscale_root = '/data/store'" -init queries/sql/open_store.sql
-- (S3 stores: LOAD httpfs and CREATE SECRET first; see README.)
SET VARIABLE cscale_version = coalesce(getvariable('cscale_version'),
  (SELECT trim(content)::INTEGER FROM read_text(getvariable('cscale_root') || '/CURRENT')));
SET VARIABLE cscale_manifest = getvariable('cscale_root') || '/manifests/'
  || lpad(getvariable('cscale_version')::VARCHAR, 8, '0') || '.json';
SET VARIABLE cscale_parts = (
  SELECT list(getvariable('cscale_root') || '/' || p.path) FROM (
    SELECT unnest(parts) AS p FROM read_json(getvariable('cscale_manifest'),
      columns = {parts: 'STRUCT(path VARCHAR)[]'}, maximum_object_size = 1073741824)));
SET VARIABLE cscale_quarantine = (
  SELECT list(getvariable('cscale_root') || '/' || q.path) FROM (
    SELECT unnest(quarantine) AS q FROM read_json(getvariable('cscale_manifest'),
      columns = {quarantine: 'STRUCT(path VARCHAR)[]'}, maximum_object_size = 1073741824)));
SET VARIABLE cscale_archive = (
  SELECT list(getvariable('cscale_root') || '/' || f) FROM (
    SELECT unnest(from_json(state -> k -> 'files', '["VARCHAR"]')) AS f FROM (
      SELECT state, unnest(json_keys(state)) AS k FROM read_json(getvariable('cscale_manifest'),
        columns = {state: 'JSON'}, maximum_object_size = 1073741824)) WHERE k LIKE 'archive:%'));
.read queries/sql/views.sql
.read queries/sql/macros.sql
