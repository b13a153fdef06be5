"""inference-fleet's own library: the fleet spec, the catalog, and the offline command line."""
