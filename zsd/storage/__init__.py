"""Storage: pool drivers, images, volumes and snapshots (issue 4; being built)."""
