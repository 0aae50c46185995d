#!/usr/bin/env bash
# Regenerate the contract artifacts <Name>.json = {"abi": [...], "bytecode": "0x..."}
# from the Solidity sources in this directory with solcjs (npm package `solc`).
# Usage: chains/evm/contracts/build.sh [NAME...]   (default: every contract; needs node
# and npx; downloads solc@0.8.37 into a temporary directory, never into the repository)
set -euo pipefail

SOLC_VERSION="${SOLC_VERSION:-0.8.37}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent "solc@${SOLC_VERSION}"

if (($#)); then names=("$@"); else names=(Multicall3 TestToken BadToken Forwarder); fi

for name in "${names[@]}"; do
    cp "$here/$name.sol" "$work/"
    npx --no-install solcjs --optimize --optimize-runs 200 --abi --bin \
        --output-dir "$work/out" "$name.sol"
    node -e '
        const fs = require("fs");
        const [dir, name, dest] = process.argv.slice(1);
        const base = `${dir}/${name}_sol_${name}`;
        const abi = JSON.parse(fs.readFileSync(`${base}.abi`, "utf8"));
        const bytecode = "0x" + fs.readFileSync(`${base}.bin`, "utf8").trim();
        fs.writeFileSync(dest, JSON.stringify({ abi, bytecode }, null, 2) + "\n");
    ' "$work/out" "$name" "$here/$name.json"
    echo "wrote $here/$name.json"
done
