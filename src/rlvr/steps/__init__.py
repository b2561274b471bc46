"""Step manifests and their discovery."""
