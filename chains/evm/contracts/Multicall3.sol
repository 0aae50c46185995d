// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title Multicall3-compatible aggregator (segwatch's own minimal version)
/// @notice Exposes the same `aggregate3` and `getEthBalance` ABI as the canonical
///         Multicall3, so segwatch reads balances the same way on a test node and on
///         mainnet. Only what segwatch needs is implemented.
contract Multicall3 {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    /// @notice Run every call in order; a failing call reverts the whole batch
    ///         unless it allows failure.
    function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory results) {
        uint256 count = calls.length;
        results = new Result[](count);
        for (uint256 i = 0; i < count; ++i) {
            Call3 calldata item = calls[i];
            (bool ok, bytes memory data) = item.target.call(item.callData);
            if (!ok && !item.allowFailure) {
                revert("Multicall3: call failed");
            }
            results[i] = Result(ok, data);
        }
    }

    /// @notice The native balance of `addr` in wei.
    function getEthBalance(address addr) external view returns (uint256 balance) {
        balance = addr.balance;
    }
}
