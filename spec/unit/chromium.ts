// Test helper: Debian's headless Chromium (scripts/setup.sh installs it) renders a page the way a
// user's browser would. `--dump-dom` gives the DOM after parsing and layout, `--screenshot` a PNG.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

export const kChromium = process.env['PROVIUM_CHROMIUM'] ?? '/usr/bin/chromium';

function chromium(args: string[], timeoutMs = 120_000): Promise<string> {
  return new Promise((resolve, reject) => {
    void mkdtemp(join(tmpdir(), 'provium-chromium-')).then((profile) => {
      const flags = [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--no-first-run',
        `--user-data-dir=${profile}`,
        ...args,
      ];
      execFile(kChromium, flags, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
        void rm(profile, { recursive: true, force: true });
        if (err) reject(new Error(`${kChromium} ${args.join(' ')}: ${err.message}\n${stderr}`));
        else resolve(stdout);
      });
    }, reject);
  });
}

/** The page's DOM as Chromium built it. */
export function dumpDom(file: string): Promise<string> {
  return chromium(['--dump-dom', pathToFileURL(file).href]);
}

/** A PNG of the page at `width`×`height`. */
export async function screenshot(file: string, png: string, width = 1400, height = 1000): Promise<void> {
  await chromium([`--screenshot=${png}`, `--window-size=${width},${height}`, '--hide-scrollbars', pathToFileURL(file).href]);
}
