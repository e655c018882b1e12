// Hardhat 2 configuration for shardnet: an offline devnet (chain id 31337) and an offline compile.
//
// `npx hardhat compile` uses the pinned solcjs in node_modules/solc instead of downloading a compiler,
// with the same settings as shardnet/chain/compile.py (evmVersion cancun, optimizer on, 200 runs, viaIR), so its
// bytecode equals the committed shardnet/chain/artifacts/ShardRegistry.json. Its outputs (cache/,
// artifacts-hh/) are git-ignored; shardnet itself reads only the committed artifact.
const { subtask } = require("hardhat/config");
const { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } = require("hardhat/builtin-tasks/task-names");

const SOLC_VERSION = require("solc/package.json").version; // pinned in package.json: 0.8.37

subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args, hre, runSuper) => {
  if (args.solcVersion !== SOLC_VERSION) {
    return runSuper(); // any other version would need a download: let hardhat say so
  }
  const solc = require("solc");
  return {
    compilerPath: require.resolve("solc/soljson.js"),
    isSolcJs: true,
    version: args.solcVersion,
    longVersion: solc.version(),
  };
});

/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  solidity: {
    version: SOLC_VERSION,
    settings: {
      evmVersion: "cancun",
      optimizer: { enabled: true, runs: 200 },
      viaIR: true,
    },
  },
  paths: {
    sources: "./contracts",
    cache: "./cache",
    artifacts: "./artifacts-hh",
  },
  networks: {
    hardhat: {
      chainId: 31337,
      hardfork: "cancun",
    },
  },
};
