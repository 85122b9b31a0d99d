// The TypeScript examples in the READMEs compile against this package as published
// (`import ... from "@pushreach/client"` resolves to this package's own exports).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const ROOT = resolve(PACKAGE, "..", "..");
// Names the snippets use without defining them, as a reader's program would have them.
const PRELUDE = "declare const accessId: string;\ndeclare const secretKey: string;\n";

test("the README examples type-check", async () => {
  const snippets: string[] = [];
  for (const readme of [join(ROOT, "README.md"), join(PACKAGE, "README.md")]) {
    const text = await readFile(readme, "utf8");
    for (const match of text.matchAll(/```ts\n([\s\S]*?)```/g)) {
      snippets.push(match[1]!);
    }
  }
  assert.ok(snippets.length >= 2, "both READMEs have a TypeScript example");
  const dir = join(PACKAGE, "dist", "doc-check");
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const files = await Promise.all(
    snippets.map(async (code, i) => {
      const file = join(dir, `example${i}.ts`);
      await writeFile(file, `${PRELUDE}${code}\nexport {};\n`);
      return file;
    }),
  );
  const tsc = join(PACKAGE, "node_modules", "typescript", "bin", "tsc");
  const args = ["--noEmit", "--strict", "--target", "ES2022", "--module", "NodeNext", "--moduleResolution", "NodeNext",
    "--types", "node", "--skipLibCheck", ...files];
  try {
    await run(process.execPath, [tsc, ...args], { cwd: PACKAGE });
  } catch (error) {
    const out = error as { stdout?: string; stderr?: string };
    assert.fail(`a README example does not compile:\n${out.stdout ?? ""}${out.stderr ?? ""}`);
  }
});
