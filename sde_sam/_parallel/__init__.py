"""Scaling out: meshes, sharded paths and runs, streaming moments over processes."""
