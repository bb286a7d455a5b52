"""MOF: dense-window local descriptors, vocabularies, Hamming Embedding, inverted files."""
