"""Benchmarks: metrics, the eval runner, plots (the collections' loaders are `layerseek.datasets`)."""
