"""`python -m layerseek.cli`: the full command line (`layerseek` itself is `shell.main`)."""
from layerseek.cli import main

main()
