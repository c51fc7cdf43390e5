"""cscale: harvest a federation of STAC providers into a versioned stac-geoparquet snapshot."""
