"""The HTTP API: routes over the service layer, and who may call them."""
