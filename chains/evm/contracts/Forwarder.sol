// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title Forwarder: moves ETH by internal calls, for segwatch's trace tests
/// @notice Every function moves value in a call frame of its own, so the movement is
/// visible only in traces, not in the transaction's `value` or in logs. Exists only on
/// test nodes: anyone may call anything.
contract Forwarder {
    /// @notice A value-carrying call from this contract failed.
    error SendFailed(address to, uint256 amount);

    /// @notice Raised on purpose by `sendThenRevert` after it has sent value.
    error Undone(address to, uint256 amount);

    /// @notice Emitted by `forwardThenRevert` when the reverted sub-call was caught.
    event SendUndone(address indexed to, uint256 amount);

    receive() external payable {}

    /// @notice Send the attached value to `to` (one internal call).
    function forward(address payable to) external payable {
        _send(to, msg.value);
    }

    /// @notice Send this contract's whole balance to `to` (one internal call).
    function sweep(address payable to) external {
        _send(to, address(this).balance);
    }

    /// @notice Send half of the attached value to `a` and the rest to `b` (two internal
    /// calls; with an odd value, `b` gets the extra wei).
    function split(address payable a, address payable b) external payable {
        uint256 half = msg.value / 2;
        _send(a, half);
        _send(b, msg.value - half);
    }

    /// @notice Send the attached value to `to` inside a sub-call that then reverts; the
    /// revert is caught, so this transaction succeeds, `to` receives nothing and the
    /// value stays in this contract. A trace shows value in frames that moved nothing.
    function forwardThenRevert(address payable to) external payable {
        try this.sendThenRevert{value: msg.value}(to) {
            // sendThenRevert never returns normally
        } catch {
            emit SendUndone(to, msg.value);
        }
    }

    /// @notice Send the attached value to `to`, then revert (undoing the send).
    function sendThenRevert(address payable to) external payable {
        _send(to, msg.value);
        revert Undone(to, msg.value);
    }

    function _send(address payable to, uint256 amount) private {
        (bool ok, ) = to.call{value: amount}("");
        if (!ok) {
            revert SendFailed(to, amount);
        }
    }
}
