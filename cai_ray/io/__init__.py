"""Edges of the system: storage locations, image codecs and shard files."""
