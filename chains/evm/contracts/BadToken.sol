// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title A misbehaving token for segwatch's defensive-decoding tests
/// @notice `balanceOf` answers according to a per-holder mode:
///         0 = the stored balance (one 32-byte word), 1 = revert with a reason,
///         2 = 16 bytes of return data, 3 = 64 bytes of return data,
///         4 = burn all gas forwarded to it (an `invalid` opcode).
contract BadToken {
    mapping(address => uint256) public stored;
    mapping(address => uint8) public mode;

    function set(address holder, uint256 amount, uint8 mode_) external {
        stored[holder] = amount;
        mode[holder] = mode_;
    }

    function balanceOf(address holder) external view returns (uint256) {
        uint8 m = mode[holder];
        uint256 amount = stored[holder];
        if (m == 1) {
            revert("BadToken: no balance for you");
        }
        if (m == 2) {
            assembly {
                mstore(0, amount)
                return(0, 16)
            }
        }
        if (m == 3) {
            assembly {
                mstore(0, amount)
                mstore(32, amount)
                return(0, 64)
            }
        }
        if (m == 4) {
            assembly {
                invalid()
            }
        }
        return amount;
    }
}
