// Compile the Nuclux contracts with solc-js and write ABI + bytecode artifacts.
//
//   node scripts/compile-contracts.mjs           write src/nuclux/chain/artifacts/*.json
//   node scripts/compile-contracts.mjs --check   exit 1 if the committed artifacts are stale
//
// Reproducible: the compiler version is pinned in package.json, the settings below are fixed
// (evmVersion cancun, bytecodeHash none) and source paths are repository-relative.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const outDir = path.join(root, "src", "nuclux", "chain", "artifacts");
const CONTRACTS = ["NuxCoin", "KeyDirectory", "ProviderRegistry", "LeaseManager", "AuctionHouse", "StorageSettlement", "CumulativeSettlement", "TimestampAnchor", "TestFaultModule"];

const sources = {};
for (const dir of ["contracts", "contracts/test"]) {
  for (const f of fs.readdirSync(path.join(root, dir)).sort()) {
    if (f.endsWith(".sol")) {
      sources[`${dir}/${f}`] = { content: fs.readFileSync(path.join(root, dir, f), "utf8") };
    }
  }
}
const input = {
  language: "Solidity",
  sources,
  settings: {
    evmVersion: "cancun",
    optimizer: { enabled: true, runs: 1000 },
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};
function findImports(p) {
  for (const base of [path.join(root, "node_modules"), root]) {
    const full = path.join(base, p);
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, "utf8") };
  }
  return { error: `not found: ${p}` };
}
const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (out.errors || []).filter((e) => e.severity === "error");
for (const e of out.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(2);

const check = process.argv.includes("--check");
let stale = [];
for (const name of CONTRACTS) {
  const file0 = name.startsWith("Test") ? `contracts/test/${name}.sol` : `contracts/${name}.sol`;
  const unit = out.contracts[file0][name];
  const art = {
    contractName: name,
    compiler: `solc-js ${solc.version()}`,
    evmVersion: "cancun",
    abi: unit.abi,
    bytecode: "0x" + unit.evm.bytecode.object,
    deployedBytecode: "0x" + unit.evm.deployedBytecode.object,
  };
  const text = JSON.stringify(art, null, 1) + "\n";
  const file = path.join(outDir, `${name}.json`);
  const size = unit.evm.deployedBytecode.object.length / 2;
  if (check) {
    const old = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
    if (old !== text) stale.push(name);
  } else {
    fs.mkdirSync(outDir, { recursive: true });
    fs.writeFileSync(file, text);
    console.log(`${name}: runtime ${size} bytes (limit 24576)`);
  }
  if (size > 24576) { console.error(`${name} exceeds the contract size limit`); process.exit(3); }
}
if (check) {
  if (stale.length) { console.error(`stale artifacts: ${stale.join(", ")}; run scripts/compile-contracts`); process.exit(1); }
  console.log("artifacts up to date");
}
