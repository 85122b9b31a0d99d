// Bundles the console into server/pushreachd/http/console_static/, which the service serves at
// /console/. `make console` runs it after `npm ci`; the output is not committed.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "server", "pushreachd", "http", "console_static");
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  outfile: join(out, "app.js"),
  loader: { ".css": "css" },
  legalComments: "none",
});
copyFileSync(join(here, "src", "index.html"), join(out, "index.html"));
console.log(`console built into ${out}`);
