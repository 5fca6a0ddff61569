"""Generated gRPC and protobuf code for datamill.v1 (scripts/protogen.py)."""
