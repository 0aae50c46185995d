"""The operator console (SPEC §10): server-rendered pages on the API's ASGI app."""
