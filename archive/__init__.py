"""S3 archives of Sentinel and Landsat products (issue: archive indexing)."""
