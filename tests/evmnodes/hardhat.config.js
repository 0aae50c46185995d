// The Hardhat node the segwatch tests start (tests/evmnodes.py): chain id 31337, the
// well-known test mnemonic (the same dev accounts as anvil), automine on.
module.exports = {
  networks: {
    hardhat: {
      chainId: 31337,
      accounts: { mnemonic: "test test test test test test test test test test test junk" },
    },
  },
};
