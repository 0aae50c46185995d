"""What comes in: the configuration, the sub-ledger and withdrawal imports and
their field parsers, the built-in chains."""
