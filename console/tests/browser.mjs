// Drives the console in Debian's chromium (playwright-core) against a real pushreach server.
// tests/integration/test_console_browser.py starts the server, makes the data and passes, in
// CONSOLE_TEST (JSON): url, access_id, secret_key, expected overview figures, the id of a push
// whose fallback is pending, and where to write screenshots. Exits non-zero on the first
// failed expectation, printing what differed.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { join } from "node:path";

const t = JSON.parse(process.env.CONSOLE_TEST);
const browser = await chromium.launch({
  executablePath: t.chromium,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"],
});
const text = (page, id) => page.getByTestId(id).locator("strong").textContent();
const shot = (page, name) => (t.screenshots ? page.screenshot({ path: join(t.screenshots, name), fullPage: true }) : null);
const timings = {};

async function signIn(page, secret) {
  await page.goto(t.url);
  await page.getByLabel("Access ID").fill(t.access_id);
  await page.getByLabel("Secret key").fill(secret);
  await page.getByRole("button", { name: "Sign in" }).click();
}

try {
  for (const width of [1440, 360]) {
    const context = await browser.newContext({ viewport: { width, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(15000);

    // A wrong secret is refused and shows why; nothing else appears.
    await signIn(page, "not-the-secret");
    await page.getByTestId("error").waitFor();
    assert.equal(await page.getByTestId("push_count").count(), 0);

    // The overview's figures are GetStatistics's.
    let started = Date.now();
    await signIn(page, t.secret_key);
    await page.getByTestId("push_count").waitFor();
    timings[`overview_${width}`] = Date.now() - started;
    for (const [id, want] of Object.entries(t.expected)) {
      assert.equal((await text(page, id)).trim(), String(want), `overview ${id}`);
    }
    await page.getByTestId("chart-sms").locator("canvas").first().waitFor();
    await shot(page, `console-overview-${width}.png`);

    // The push list, then the pending push: its targets and its cancel button.
    started = Date.now();
    await page.goto(`${t.url}#/pushes`);
    await page.getByTestId("push-list").locator("tbody tr").first().waitFor();
    timings[`pushes_${width}`] = Date.now() - started;
    assert.equal(await page.getByTestId("push-list").locator("tbody tr").count(), t.push_count);
    await shot(page, `console-pushes-${width}.png`);
    await page.getByTestId("push-search").fill(t.pending_push_id);
    await page.getByRole("button", { name: "Search" }).click();
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=push-list] tbody tr").length === 1);
    started = Date.now();
    await page.getByRole("link", { name: t.pending_push_id }).click();
    await page.getByTestId("push-page").waitFor();
    timings[`push_${width}`] = Date.now() - started;
    assert.equal(await page.getByTestId("targets").locator("tbody tr").count(), t.pending_targets);
    assert.equal((await text(page, "fallback-state")).trim(), "pending");
    await shot(page, `console-push-${width}.png`);
    if (width === 360) {
      await page.getByTestId("cancel-fallback").click();
      await page.waitForFunction(
        () => document.querySelector("[data-testid=fallback-state] strong")?.textContent.trim() === "cancelled"
      );
      assert.equal(await page.getByTestId("cancel-fallback").count(), 0);
    }

    // SMS records and a device by token.
    await page.goto(`${t.url}#/sms`);
    await page.getByTestId("sms-list").locator("tbody tr").first().waitFor();
    assert.equal(await page.getByTestId("sms-list").locator("tbody tr").count(), t.sms_records);
    assert.ok(!(await page.getByTestId("sms-list").textContent()).includes(t.full_phone), "phones are masked");
    await shot(page, `console-sms-${width}.png`);
    await page.goto(`${t.url}#/devices`);
    await page.getByTestId("device-token").fill(t.device_token);
    await page.getByRole("button", { name: "Look up" }).click();
    await page.getByTestId("device").waitFor();

    // Sign out: back to the form, and the API refuses the old page.
    await page.getByTestId("sign-out").click();
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    const status = await page.evaluate(async () => (await fetch("api/session")).status);
    assert.equal(status, 401);
    await context.close();
  }
  console.log(JSON.stringify({ ok: true, timings_ms: timings }));
} finally {
  await browser.close();
}
