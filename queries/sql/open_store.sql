-- For the plain duckdb CLI: point cscale's views at a store, then run views.sql and macros.sql. From the
-- repository root (the .read paths below are relative to it), with cscale_root set first:
--   duckdb -cmd "SET VARIABLE cscale_root = '/data/store'" -cmd ".read queries/sql/open_store.sql"
-- (not -init: the CLI runs the init file before any -cmd, so cscale_root would still be unset). Set
-- cscale_version too for an older version. LOAD the spatial extension first (the wheel's file, see README):
-- search_bbox needs it, and the CLI stops at the first error. S3 stores: LOAD httpfs and CREATE SECRET first.
-- A version without parts, quarantined records or archive inventory leaves its list NULL: views.sql then
-- reads the empty stand-ins, exactly as queries.connect does.
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
.read queries/sql/empty_views.sql
.read queries/sql/empty_quarantine.sql
.read queries/sql/empty_archive.sql
.read queries/sql/views.sql
.read queries/sql/macros.sql
