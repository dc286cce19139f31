"""Generated gRPC code for dsd.proto (regenerate with `python -m dsd_runtime.common.proto.generate`)."""
