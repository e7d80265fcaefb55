"""Generated protobuf and gRPC code for the zsd.v1 API. Do not edit: run protos/generate.py."""
