// --html DIR (and `provium merge`): one self-contained index.html, readable without a network or
// a server: the summary, the failed tests first (message, where, log, console excerpt, a link to
// their place on the timeline), the timeline (timeline.ts), then every file. Plain HTML and CSS:
// no script, so what a browser shows is what the file says.

import { join } from 'node:path';
import { writeFileAtomic } from '../run/atomic-write.js';
import { countsLine, type FileOutcome, type PlannedFile, type RunSummary } from '../run/outcome.js';
import { ReportWriteError, type Reporter, type RunInfo } from '../run/reporter.js';
import type { AnyEvent } from '../protocol/events.js';
import type { TestResult } from '../protocol/task.js';
import { escapeAttr, escapeText } from './junit.js';
import { buildTimeline, testAnchor, type EventStream, type Timeline, type TimelineItem } from './timeline.js';
import { formatDuration, sanitizeForTerminal } from './screen.js';

export interface HtmlInput {
  summary: RunSummary;
  outcomes: FileOutcome[];
  /** Files planned but never started (shown as not run). */
  planned: PlannedFile[];
  streams: EventStream[];
  /** "shard 2/3 of …", "3 shards merged", the seed. */
  facts: string[];
}

const kStyle = `
body{font:14px/1.4 system-ui,sans-serif;margin:0 24px 48px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:20px 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.facts{color:#666}.counts span{display:inline-block;margin:8px 12px 0 0;padding:4px 10px;border-radius:4px;background:#eee;font-weight:600}
.counts .passed{background:#dcf5e3;color:#14632b}.counts .failed{background:#fde0e0;color:#9b1c1c}.counts .skipped,.counts .not-run{background:#fff3cd;color:#7a5b00}.counts .flaky{background:#efe1ff;color:#5b2a91}
.failure{border:1px solid #f3b5b5;border-left:4px solid #d33;border-radius:4px;padding:8px 12px;margin:10px 0;background:#fffafa}
.failure h3{margin:0;font-size:15px}.where{font-family:monospace;color:#555}
pre{background:#f6f6f6;padding:6px 8px;overflow-x:auto;white-space:pre-wrap;margin:6px 0;font-size:12px}
.lane{display:flex;align-items:stretch;border-top:1px solid #eee}.lane-name{width:160px;flex:none;font-size:12px;padding:4px;color:#444;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.track{position:relative;flex:1;height:58px;background:repeating-linear-gradient(90deg,#fafafa 0 10%,#fff 10% 20%)}
.item{position:absolute;height:14px;min-width:2px;border-radius:2px;font-size:10px;line-height:14px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;border-right:1px solid #fff;color:#000;text-decoration:none;box-sizing:border-box}
.item.file{top:2px;background:#cfe3ff;border:1px solid #8fb6ee}.item.file.failed,.item.file.timed_out,.item.file.crashed{background:#ffd2d2;border-color:#e08a8a}
.item.test{top:20px;background:#9bd9a9}.item.test.failed{background:#f08080}.item.test.skipped{background:#ffe08a}
.item.test:target{outline:3px solid #000;z-index:2}
.item.boot{top:38px;background:#b9b9ff}.item.boot.snapshot{background:#8fd3e8}.item.boot.pool{background:#c3f0c3}
.item.fixture{top:20px;background:#f5c48c}.item.fault{top:38px;width:3px;min-width:3px;background:#d0021b}
.legend span{margin-right:14px;font-size:12px}.legend i{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:middle}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px;text-align:left;border-bottom:1px solid #eee}
.status-passed{color:#14632b}.status-failed,.status-timed_out,.status-crashed{color:#9b1c1c;font-weight:600}
`;

function esc(text: string): string {
  return escapeText(sanitizeForTerminal(text));
}

function where(test: TestResult): string {
  const at = test.failureLocation ?? test.location;
  return at ? `${at.file}:${at.line}` : '';
}

interface Failed {
  path: string;
  test: TestResult;
}

function failuresOf(outcomes: FileOutcome[]): { tests: Failed[]; files: FileOutcome[] } {
  const tests: Failed[] = [];
  const files: FileOutcome[] = [];
  for (const o of outcomes) {
    const failed = o.result.tests.filter((t) => t.status === 'failed');
    for (const test of failed) tests.push({ path: o.file.displayPath, test });
    if (failed.length === 0 && o.result.fatalErrors.length > 0) files.push(o);
  }
  return { tests, files };
}

function failureArticle({ path, test }: Failed, timeline: Set<string>): string {
  const anchor = testAnchor(path, test.name);
  const link = timeline.has(anchor) ? `<a class="timeline-link" href="#${anchor}">show on the timeline</a>` : '';
  const retries = test.retryFailures?.length ? `<pre class="retries">${esc(test.retryFailures.map((m, i) => `attempt ${i + 1}: ${m}`).join('\n'))}</pre>` : '';
  return (
    `<article class="failure" data-file="${escapeAttr(path)}" data-test="${escapeAttr(test.name)}">` +
    `<h3>${esc(test.name)}</h3><div class="where">${esc(path)}${where(test) ? ` · ${esc(where(test))}` : ''}</div>` +
    `<pre class="message">${esc(test.message ?? 'failed')}</pre>${retries}` +
    (test.log.length ? `<div>log</div><pre class="log">${esc(test.log.join('\n'))}</pre>` : '') +
    (test.consoleExcerpt ? `<div>console excerpt</div><pre class="console">${esc(test.consoleExcerpt)}</pre>` : '') +
    `${link}</article>`
  );
}

function fileFailureArticle(o: FileOutcome): string {
  const body = o.result.fatalErrors.map((e) => (e.location ? `${e.location.file}:${e.location.line}: ${e.message}` : e.message)).join('\n\n');
  return `<article class="failure file-failure" data-file="${escapeAttr(o.file.displayPath)}"><h3>${esc(o.file.displayPath)} (${esc(o.status)})</h3><pre class="message">${esc(body)}</pre></article>`;
}

function itemHtml(item: TimelineItem, spanMs: number): string {
  const left = (100 * item.startMs) / spanMs;
  const width = (100 * (item.endMs - item.startMs)) / spanMs;
  const title = `${item.label} · ${item.status} · ${formatDuration(item.startMs)}–${formatDuration(item.endMs)}${item.detail ? ` · ${item.detail}` : ''}`;
  const style = `left:${left.toFixed(3)}%;${item.kind === 'fault' ? '' : `width:${width.toFixed(3)}%`}`;
  const tag = item.kind === 'test' ? 'a' : 'div';
  const id = item.id ? ` id="${item.id}" href="#${item.id}"` : '';
  return `<${tag} class="item ${item.kind} ${escapeAttr(item.status.replace(/\s+/g, '-'))}"${id} style="${style}" title="${escapeAttr(title)}">${item.kind === 'fault' ? '' : esc(item.label)}</${tag}>`;
}

function timelineHtml(timeline: Timeline): string {
  const byLane = timeline.lanes.map(() => [] as string[]);
  for (const item of timeline.items) byLane[item.lane]!.push(itemHtml(item, timeline.spanMs));
  const legend = [
    ['#cfe3ff', 'file'],
    ['#9bd9a9', 'test'],
    ['#b9b9ff', 'cold boot'],
    ['#8fd3e8', 'snapshot restore'],
    ['#c3f0c3', 'warm-pool VM'],
    ['#f5c48c', 'fixture build'],
    ['#d0021b', 'network/disk fault'],
  ]
    .map(([color, name]) => `<span><i style="background:${color}"></i>${name}</span>`)
    .join('');
  const lanes = timeline.lanes
    .map((name, i) => `<div class="lane" data-lane="${escapeAttr(name)}"><div class="lane-name" title="${escapeAttr(name)}">${esc(name)}</div><div class="track">${byLane[i]!.join('')}</div></div>`)
    .join('\n');
  return `<div class="legend">${legend}</div><div class="axis">0 – ${formatDuration(timeline.spanMs)}</div>\n<div class="lanes">${lanes}</div>`;
}

function filesTable(outcomes: FileOutcome[], planned: PlannedFile[]): string {
  const ran = new Set(outcomes.map((o) => o.file.displayPath));
  const rows = outcomes
    .map((o) => {
      const c = { passed: 0, failed: 0, skipped: 0, not_run: 0 };
      for (const t of o.result.tests) c[t.status]++;
      return `<tr class="file-row"><td>${esc(o.file.displayPath)}</td><td class="status-${o.status}">${o.status}</td><td>${c.passed}</td><td>${c.failed}</td><td>${c.skipped}</td><td>${c.not_run}</td><td>${formatDuration(o.durationMs)}</td></tr>`;
    })
    .concat(planned.filter((f) => !ran.has(f.displayPath)).map((f) => `<tr class="file-row"><td>${esc(f.displayPath)}</td><td>not run</td><td></td><td></td><td></td><td></td><td></td></tr>`));
  return `<table><thead><tr><th>file</th><th>status</th><th>passed</th><th>failed</th><th>skipped</th><th>not run</th><th>time</th></tr></thead><tbody>${rows.join('\n')}</tbody></table>`;
}

export function renderHtml(input: HtmlInput): string {
  const s = input.summary;
  const timeline = buildTimeline(input.streams);
  const anchors = new Set(timeline.items.flatMap((i) => (i.id ? [i.id] : [])));
  const failures = failuresOf(input.outcomes);
  const failedCount = failures.tests.length + failures.files.length;
  const counts = [
    ['passed', s.passed],
    ['failed', s.failed],
    ['skipped', s.skipped],
    ['flaky', s.flaky],
    ['not-run', s.notRun],
  ]
    .map(([cls, n]) => `<span class="${cls}" data-count="${n}">${n} ${String(cls).replace('-', ' ')}</span>`)
    .join('');
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Provium: ${escapeText(countsLine(s))}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>${kStyle}</style></head>
<body>
<h1>Provium test report</h1>
<section id="summary" data-passed="${s.passed}" data-failed="${s.failed}" data-skipped="${s.skipped}" data-flaky="${s.flaky}" data-not-run="${s.notRun}" data-files="${s.files}" data-files-failed="${s.filesFailed}">
<div class="facts">${esc(`${s.files} file${s.files === 1 ? '' : 's'} (${s.filesFailed} failed) in ${formatDuration(s.wallMs)}`)}${input.facts.map((f) => ` · ${esc(f)}`).join('')}</div>
<div class="counts">${counts}</div>
</section>
<section id="failures" data-count="${failedCount}"><h2>Failed tests (${failedCount})</h2>
${failedCount === 0 ? '<p>None.</p>' : [...failures.tests.map((f) => failureArticle(f, anchors)), ...failures.files.map(fileFailureArticle)].join('\n')}
</section>
<section id="timeline" data-lanes="${timeline.lanes.length}"><h2>Timeline</h2>
${timelineHtml(timeline)}
</section>
<section id="files"><h2>Files</h2>
${filesTable(input.outcomes, input.planned)}
</section>
</body></html>
`;
}

/** Writes DIR/index.html; a failure is a ReportWriteError naming `flag` and the path. */
export async function writeHtmlReport(dir: string, input: HtmlInput, flag = '--html'): Promise<string> {
  const path = join(dir, 'index.html');
  await writeFileAtomic(path, renderHtml(input)).catch((err: unknown) => Promise.reject(new ReportWriteError(flag, path, err)));
  return path;
}

export class HtmlReporter implements Reporter {
  private readonly _events: AnyEvent[] = [];
  private readonly _outcomes: FileOutcome[] = [];
  private _info: RunInfo | undefined;

  constructor(private readonly _dir: string) {}

  onBegin(info: RunInfo): void {
    this._info = info;
  }

  onEvent(event: AnyEvent): void {
    this._events.push(event);
  }

  onFileEnd(outcome: FileOutcome): void {
    this._outcomes.push(outcome);
  }

  async onEnd(summary: RunSummary): Promise<void> {
    const info = this._info;
    const facts: string[] = [];
    if (info?.shard) facts.push(`shard ${info.shard.index}/${info.shard.count}`);
    if (info) facts.push(`${info.workers} worker${info.workers === 1 ? '' : 's'}`, `seed ${info.seed}`);
    await writeHtmlReport(this._dir, { summary, outcomes: this._outcomes, planned: info?.files ?? [], streams: [{ label: null, events: this._events }], facts });
  }
}
