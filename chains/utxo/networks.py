"""What a UTXO source's genesis block says about the network it serves."""

from __future__ import annotations

GENESIS_NETWORK = {
    "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f": "bitcoin",
    "000000000933ea01ad0ee984209779baaec3ced90fa3f408719526f8d77f4943": "testnet",
    "00000008819873e925422c1ff0f99f7cc9bbb232af63a077a480a3633bee1ef6": "signet",
    "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206": "regtest",
    "12a765e31ffd4059bada1e25190f6e98c99d9714d334efa41a195a7e7e04bfe2": "litecoin",
    "530827f38f93b43ed12af0b3ad25a288dc02ed74d6d7857862df51fc56c416f9": "litecoin-regtest",
}
"""Genesis block hash → segwatch network. All signets share one genesis block."""


def coin_of(network: str) -> str:
    """Return "litecoin" for litecoin networks, else "bitcoin"."""
    return "litecoin" if network.startswith("litecoin") else "bitcoin"
