"""Host-to-host protocol of zsd (generated code in zsd.peer.v1)."""
