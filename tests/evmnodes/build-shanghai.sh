#!/usr/bin/env bash
# Regenerate tests/evmnodes/shanghai/<Name>.json = {"abi", "bytecode"} from
# chains/evm/contracts/<Name>.sol for EVM version "shanghai": Ganache 7.9 runs nothing
# newer, and solc 0.8.37's default target emits Cancun's MCOPY (0x5e), which ganache
# refuses with "invalid opcode". Same compiler and optimizer settings as
# chains/evm/contracts/build.sh (solcjs from npm, into a temporary directory).
# Usage: tests/evmnodes/build-shanghai.sh [NAME...]   (default: TestToken Multicall3)
set -euo pipefail

SOLC_VERSION="${SOLC_VERSION:-0.8.37}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sources="$here/../../chains/evm/contracts"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent "solc@${SOLC_VERSION}"

if (($#)); then names=("$@"); else names=(TestToken Multicall3); fi

for name in "${names[@]}"; do
    node -e '
        const fs = require("fs");
        const solc = require("solc");
        const [source, name, dest] = process.argv.slice(1);
        const input = {
            language: "Solidity",
            sources: { [`${name}.sol`]: { content: fs.readFileSync(source, "utf8") } },
            settings: {
                evmVersion: "shanghai",
                optimizer: { enabled: true, runs: 200 },
                outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
            },
        };
        const output = JSON.parse(solc.compile(JSON.stringify(input)));
        const errors = (output.errors || []).filter((e) => e.severity === "error");
        if (errors.length) { console.error(errors); process.exit(1); }
        const contract = output.contracts[`${name}.sol`][name];
        const artifact = { abi: contract.abi, bytecode: "0x" + contract.evm.bytecode.object };
        fs.writeFileSync(dest, JSON.stringify(artifact, null, 2) + "\n");
    ' "$sources/$name.sol" "$name" "$here/shanghai/$name.json"
    echo "wrote $here/shanghai/$name.json"
done
