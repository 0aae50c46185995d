"""The auditor export package: build, sign, verify, prove; pinned balances; the
HTML report."""
