"""`python -m layerseek`: the `layerseek` command."""
from layerseek.shell import main

main()
