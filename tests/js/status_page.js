// Opens the controller's status page in headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core) and reports what it shows.
//
//   node status_page.js URL NODE
//
// Prints one JSON line once the page has drawn its nodes and plans, then
// waits (up to 30 s, without reloading: the page must refresh itself) until
// NODE's row leaves the "alive" state and prints a second line. Exits 1 on
// errors, including errors the page's script throws.
'use strict';

const { chromium } = require('playwright-core');

async function snapshot(page) {
  return page.evaluate(() => {
    const nodes = {};
    for (const tr of document.querySelectorAll('#nodes tr.node')) {
      nodes[tr.dataset.node] = tr.dataset.state;
    }
    const plans = {};
    for (const s of document.querySelectorAll('svg.plan')) {
      plans[s.dataset.model] = [...s.querySelectorAll('g.stage')].map(
          (g) => [g.dataset.node, g.dataset.blocks, g.dataset.state]);
    }
    return {
      version: document.getElementById('version').textContent,
      nodes,
      plans,
      titles: [...document.querySelectorAll('.plan-title')].map(
          (d) => d.textContent),
      links: document.querySelectorAll('#links tr.link').length,
      error: document.getElementById('error').textContent,
    };
  });
}

async function main() {
  const [url, node] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('requestfailed', (r) => {
      // Only the page's own origin may be asked for anything.
      if (!r.url().startsWith(url)) errors.push('external request ' + r.url());
    });
    page.on('request', (r) => {
      if (!r.url().startsWith(url)) errors.push('external request ' + r.url());
    });
    await page.goto(url);
    await page.waitForSelector('svg.plan g.stage', { timeout: 20000 });
    console.log(JSON.stringify(await snapshot(page)));
    // A picture of the page, for whoever changes it (not checked).
    if (process.env.STATUS_SCREENSHOT) {
      await page.screenshot({ path: process.env.STATUS_SCREENSHOT, fullPage: true });
    }
    await page.waitForFunction(
        (n) => {
          const tr = document.querySelector(`#nodes tr.node[data-node="${n}"]`);
          return tr && tr.dataset.state !== 'alive';
        },
        node, { timeout: 30000, polling: 200 });
    console.log(JSON.stringify(await snapshot(page)));
    if (errors.length > 0) throw new Error(errors.join('; '));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(String(e));
  process.exit(1);
});
