"""Target (cloud) role: holds per-session KV caches and verifies draft windows over gRPC."""
