"""Chain adapters: read heads and balances from data sources. Never imports `daemon`."""
