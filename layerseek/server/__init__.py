"""The HTTP server and web page (`layerseek serve`)."""
