"""Storage of an index: the SQLite catalog with its vectors, and the manifest."""
