"""Generated protobuf and gRPC code for zsd.peer.v1, the host-to-host calls. Do not edit: run protos/generate.py."""
