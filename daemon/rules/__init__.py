"""PURE decisions: reconciliation, transfer flows, the workflow's rules, the
Merkle-sum tree, amounts, the business calendar, wallet shards. No I/O."""
