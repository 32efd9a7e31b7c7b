// The committed dist/ (ESM JavaScript and .d.ts, what the package ships and
// the other tests import) is exactly what src/ compiles to with the pinned
// TypeScript. TypeScript comes from the npm registry into a cache outside
// the repository; npm is installed with scripts/apt-install.sh when missing.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const pkg = fileURLToPath(new URL("..", import.meta.url));
const root = join(pkg, "..", "..");
const version = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")).devDependencies.typescript;

function tsc() {
  const local = join(pkg, "node_modules", "typescript", "bin", "tsc");
  if (existsSync(local) && JSON.parse(readFileSync(join(pkg, "node_modules", "typescript", "package.json"), "utf8")).version === version) return local;
  const cache = join(tmpdir(), `vigil-sdk-typescript-${version}`);
  const bin = join(cache, "node_modules", "typescript", "bin", "tsc");
  if (!existsSync(bin)) {
    execFileSync("bash", [join(root, "scripts", "apt-install.sh"), "npm", "npm"], { stdio: "inherit" });
    mkdirSync(cache, { recursive: true });
    execFileSync("npm", ["install", "--no-save", "--no-package-lock", "--no-audit", "--no-fund", "--prefix", cache, `typescript@${version}`], { stdio: "inherit" });
  }
  return bin;
}

function files(dir) {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => relative(dir, join(d.parentPath ?? d.path, d.name)))
    .sort();
}

test("dist/ is what src/ compiles to", () => {
  const out = mkdtempSync(join(tmpdir(), "vigil-sdk-ts-"));
  try {
    execFileSync(process.execPath, [tsc(), "-p", join(pkg, "tsconfig.json"), "--outDir", out], { stdio: "inherit" });
    const want = files(out), have = files(join(pkg, "dist"));
    assert.deepEqual(have, want, "dist/ has other files than the build: run `npm run build` in sdk/typescript");
    for (const f of want) {
      assert.equal(readFileSync(join(pkg, "dist", f), "utf8"), readFileSync(join(out, f), "utf8"), `dist/${f} is stale: run \`npm run build\` in sdk/typescript`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
