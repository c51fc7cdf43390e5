-- cscale views over one snapshot version.
-- Needs these variables (queries.connect sets them; in the plain duckdb CLI, run open_store.sql first):
--   cscale_root        the store root ('/data/store' or 's3://bucket/prefix')
--   cscale_version     the version to read
--   cscale_parts       the list of part file URLs of that version
--   cscale_quarantine  the list of quarantine file URLs of that version
--   cscale_manifest    the URL of that version's manifest
--   cscale_archive     the list of archive inventory part URLs of that version (`cscale archive index`)
-- and the stand-ins of empty_views.sql, empty_quarantine.sql and empty_archive.sql (run them first).
--
-- read_parquet fails on an empty (or NULL) list, and a version may have no parts, no quarantined records or no
-- archive inventory: the file-backed views pick, through query(), read_parquet or the typed empty stand-in, so the
-- same statements work in queries.connect and in the plain duckdb CLI (which cannot branch). Filters and
-- projections are still pushed into the Parquet scan.
-- hive_partitioning = false: the part paths (items/provider=/collection=/year=/, quarantine/provider=/,
-- archive/site=/bucket=/) are storage layout, not data. DuckDB would otherwise add `year` to `items`, let the path
-- values shadow the files' own provider/collection/site/bucket columns (and a STAC property named `year`), and
-- guess their types from the path (provider `123` would become a BIGINT). A filter on provider or collection still
-- reaches the Parquet scan, whose statistics skip every row group of another partition (union_by_name reads each
-- part's footer at bind anyway); search prunes parts by the manifest's per-part stats (queries.search), not by
-- paths; the `parts` view has the partition columns, `year` included.

CREATE OR REPLACE TEMP TABLE cscale_manifest AS
  SELECT * FROM read_json(getvariable('cscale_manifest'),
    columns = {version: 'INTEGER', parent: 'INTEGER', committed_at: 'TIMESTAMPTZ',
               parts: 'STRUCT(path VARCHAR, provider VARCHAR, collection VARCHAR, "year" INTEGER, "rows" BIGINT,
                              bytes BIGINT, datetime_min TIMESTAMPTZ, datetime_max TIMESTAMPTZ, bbox DOUBLE[])[]',
               collections: 'JSON', state: 'JSON', run: 'JSON'},
    maximum_object_size = 1073741824);

-- One row per (provider, item); `collection` is the provider's own id, `federated_collection` is
-- 'PROVIDER|collection' as EO-MQS names it.
CREATE OR REPLACE VIEW items AS
  SELECT *, provider || '|' || coalesce(collection, '') AS federated_collection
  FROM query(CASE WHEN len(coalesce(getvariable('cscale_parts'), [])) > 0
    THEN 'SELECT * FROM read_parquet(getvariable(''cscale_parts''), union_by_name = true, hive_partitioning = false)'
    ELSE 'SELECT * FROM cscale_empty_items()' END);

CREATE OR REPLACE VIEW parts AS
  SELECT p.* FROM (SELECT unnest(parts) AS p FROM cscale_manifest);

CREATE OR REPLACE VIEW collections AS
  WITH stats AS (
    SELECT provider, collection, sum("rows") AS items, min(datetime_min) AS datetime_min,
           max(datetime_max) AS datetime_max, min(bbox[1]) AS xmin, min(bbox[2]) AS ymin,
           max(bbox[3]) AS xmax, max(bbox[4]) AS ymax, count(*) AS parts, sum(bytes) AS bytes
    FROM parts GROUP BY ALL
  ), meta AS (
    SELECT k AS federated_collection, (SELECT collections FROM cscale_manifest) -> ('$."' || k || '"') AS collection_json
    FROM (SELECT unnest(json_keys((SELECT collections FROM cscale_manifest))) AS k)
  )
  SELECT s.provider || '|' || coalesce(s.collection, '') AS federated_collection, s.*,
         m.collection_json, m.collection_json ->> 'title' AS title
  FROM stats s LEFT JOIN meta m ON m.federated_collection = s.provider || '|' || coalesce(s.collection, '');

CREATE OR REPLACE VIEW providers AS
  SELECT provider, count(DISTINCT collection) AS collections, sum("rows") AS items, sum(bytes) AS bytes,
         count(*) AS parts, min(datetime_min) AS datetime_min, max(datetime_max) AS datetime_max
  FROM parts GROUP BY provider;

CREATE OR REPLACE VIEW quarantine AS
  SELECT * FROM query(CASE WHEN len(coalesce(getvariable('cscale_quarantine'), [])) > 0
    THEN 'SELECT * FROM read_parquet(getvariable(''cscale_quarantine''), union_by_name = true, hive_partitioning = false)'
    ELSE 'SELECT * FROM cscale_empty_quarantine()' END);

-- The run report of every version up to this one (versions removed by gc are gone from here too).
CREATE OR REPLACE VIEW runs AS
  SELECT version, parent, committed_at, run ->> 'kind' AS kind, run ->> 'provider' AS provider,
         (run -> 'counts' ->> 'seen')::BIGINT AS seen, (run -> 'counts' ->> 'written')::BIGINT AS written,
         (run -> 'counts' ->> 'quarantined')::BIGINT AS quarantined,
         (run -> 'counts' ->> 'deduplicated')::BIGINT AS deduplicated,
         (run -> 'counts' ->> 'deleted')::BIGINT AS deleted, run
  FROM read_json(getvariable('cscale_root') || '/manifests/*.json',
                 columns = {version: 'INTEGER', parent: 'INTEGER', committed_at: 'TIMESTAMPTZ', run: 'JSON'},
                 maximum_object_size = 1073741824)
  WHERE version <= getvariable('cscale_version');

-- One row per product key: the same Copernicus/Landsat product held by several providers (replicas), whichever
-- name each gives it. Items whose name is not a recognised product name have no key and are left out.
CREATE OR REPLACE VIEW products AS
  SELECT product_key, list(provider ORDER BY provider) AS providers, count(*) AS replicas,
         list(id ORDER BY provider) AS ids, list(federated_collection ORDER BY provider) AS collections,
         min(datetime) AS datetime
  FROM items WHERE product_key IS NOT NULL GROUP BY product_key;

-- One row per object of every indexed S3 archive (`cscale archive index`): site, bucket, key, size, etag,
-- last_modified, storage_class, its product's root (`product`), item id (`product_id`) and `product_key`
-- (null, with a `reason`, when the object is not part of a recognised product).
CREATE OR REPLACE VIEW archive_objects AS
  SELECT * FROM query(CASE WHEN len(coalesce(getvariable('cscale_archive'), [])) > 0
    THEN 'SELECT * FROM read_parquet(getvariable(''cscale_archive''), union_by_name = true, hive_partitioning = false)'
    ELSE 'SELECT * FROM cscale_empty_archive()' END);
