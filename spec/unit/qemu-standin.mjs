#!/usr/bin/env node
// A stand-in for `qemu-system-x86_64`, for unit tests of the broker (PROVIUM_QEMU=<this file>).
// It takes the command line src/vmm/cmdline.ts builds and plays QEMU's part on every socket the
// broker uses, with the REAL guest agent (agent/build/provium-agent --listen) as the "guest":
//
//   QMP       `-chardev socket,id=qmp,path=P` + `-mon chardev=qmp,mode=control`: QEMU is the
//             CLIENT (it dials the broker's qmp.sock; with server=on it would listen instead).
//             Greeting, qmp_capabilities, query-status, stop, cont, system_reset, set-action,
//             system_powerdown, quit, migrate-set-capabilities, migrate-set-parameters,
//             migrate, migrate-incoming, query-migrate, migrate_cancel, query-version,
//             human-monitor-command; other commands get CommandNotFound as from real QEMU.
//             Events as QEMU sends them: STOP, RESUME, RESET, POWERDOWN, SHUTDOWN (with `guest`
//             and `reason`), MIGRATION (only once the `events` capability is on).
//   agent     `-chardev socket,id=agent,path=P,server=on,wait=off` + a virtserialport named
//             org.provium.agent: QEMU is the SERVER. One broker connection is served at a time
//             (later ones wait, as with QEMU's chardev); its bytes are relayed to the agent's
//             listen socket and back while the guest runs (nothing moves while it is paused,
//             in `inmigrate` or `postmigrate`). A broker disconnect is a host close of the port:
//             the agent starts a new session. The agent's stderr is the guest's console output.
//   console   `-chardev socket,id=con,path=P,server=on,wait=off,logfile=L` + `-serial chardev:con`:
//             QEMU is the SERVER; the log gets "stand-in console" at start-up, then the agent's
//             messages; input from a console client is echoed back (as a tty would).
//   netdevs   `-netdev stream,server=off,addr.path=P`: connected at start-up (QEMU is the client
//             and fails when nobody listens); frames from the switch are discarded.
//   others    -name, -machine, -cpu, -m, -smp, -kernel/-initrd (must be readable, as QEMU
//             loads them), -append, -device, -object, -fw_cfg, -rtc, -blockdev (accepted, not
//             connected), -incoming defer, -pidfile, -S, -no-reboot, -no-shutdown. An option
//             this file does not know is an error, so a new flag in cmdline.ts is noticed here.
//
// The "guest" is the host. To keep it from touching the host: the agent runs without
// CAP_SYS_TIME, CAP_SYS_BOOT, CAP_SYS_MODULE and CAP_SYS_ADMIN (setpriv --bounding-set, when
// root), and `get_time`/`set_time`/`advance_time` are answered here from a per-"guest" clock
// offset instead of setting the host clock (inside a `batch` they reach the agent and fail EPERM).
//
// Snapshots: `migrate` writes a small placeholder stream ("QEVM", version 3, a JSON header with
// the machine, memory and run state, then STANDIN_SNAPSHOT_BYTES of padding) to the broker's
// socket; `migrate-incoming` reads one back and checks it as QEMU would (bad magic or a memory
// size mismatch fail the load, and QEMU then exits 1). A restored "guest" is a FRESH agent: the
// processes, handles and workers of the saved one are not carried over (the files are: the
// "guest" filesystem is the host's). A reset (system_reset with reboot action `reset`) also
// starts a fresh agent; with `-no-reboot` and no set-action, system_reset shuts down as in QEMU.
//
// Exits: `quit` (reply, SHUTDOWN host-qmp-quit, exit 0); SIGTERM/SIGINT/SIGHUP (SHUTDOWN
// host-signal, exit 0); system_powerdown (POWERDOWN, then the guest powers off: SHUTDOWN
// guest-shutdown, exit 0). Every exit kills the agent and everything it spawned first. SIGKILL
// of the stand-in cannot be caught: the agent dies with it (pdeathsig), and processes the agent
// had spawned are then left to init.
//
// Fault switches (environment):
//   STANDIN_EXIT_AFTER_MS=N     simulate a crash N ms after start-up
//   SIGUSR2                     simulate a crash now (SIGUSR1 is Node's debugger signal)
//   SIGWINCH                    someone else pauses the guest (QMP `stop` from outside: STOP)
//   SIGTTIN                     the guest freezes: QEMU runs, but nothing moves on the agent link
//   SIGTTOU                     the guest closes the agent's port (VSERPORT_CHANGE open=false) and goes quiet
//   SIGPWR                      the guest kernel panics: GUEST_PANICKED, a panic on the console, then
//                               SHUTDOWN guest-panic and exit 0
//   SIGURG                      the guest powers itself off (SHUTDOWN guest-shutdown, exit 0)
//   STANDIN_EXIT_CODE=N         exit code of a simulated crash or launch failure (default 1)
//   STANDIN_STDERR=text         what a crash or launch failure prints on stderr
//   STANDIN_FAIL_LAUNCH=1       print STANDIN_STDERR and exit before connecting to QMP
//   STANDIN_NO_AGENT=1          no agent: the port is never opened, hellos go unanswered
//   STANDIN_AGENT_DELAY_MS=N    "guest boot time" before the agent starts (also after a reset)
//   STANDIN_IGNORE_POWERDOWN=1  the guest ignores the ACPI power button
//   STANDIN_SNAPSHOT_BYTES=N    padding in a saved stream (default 65536)
//   STANDIN_CRASH_ON_MIGRATE=1  crash as a migration (a snapshot save) starts
//   PROVIUM_AGENT_BIN           the agent binary (default: agent/build/provium-agent)

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Decoder, Encoder } from '@msgpack/msgpack';

const PROG = 'qemu-system-x86_64';
const AGENT_PORT_NAME = 'org.provium.agent';
const MAX_FRAME_BYTES = 64 * 1024 * 1024;
const MIGRATION_MAGIC = Buffer.from('QEVM');
const MIGRATION_VERSION = 3;
const here = path.dirname(fileURLToPath(import.meta.url));
const env = process.env;

// ---------------------------------------------------------------------------------------------
// Command line

/** Options that take a value, and flags that do not (everything else is refused). */
const kValued = new Set([
  '-name', '-machine', '-M', '-cpu', '-m', '-smp', '-kernel', '-initrd', '-append', '-chardev', '-mon',
  '-serial', '-device', '-object', '-fw_cfg', '-rtc', '-netdev', '-blockdev', '-incoming', '-pidfile',
  '-display', '-accel', '-global', '-boot', '-bios', '-L', '-D', '-d',
]);
const kFlags = new Set(['-nodefaults', '-no-user-config', '-no-reboot', '-no-shutdown', '-S', '-enable-kvm', '-nographic']);

/** QEMU's `a,b=c,d=e,,f` syntax: `,,` is a literal comma; a first part without `=` is `_`. */
function parseOpts(s) {
  const parts = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    if (s[i] === ',') {
      if (s[i + 1] === ',') { cur += ','; i++; continue; }
      parts.push(cur);
      cur = '';
    } else {
      cur += s[i];
    }
  }
  parts.push(cur);
  const out = {};
  parts.forEach((p, i) => {
    const eq = p.indexOf('=');
    if (eq < 0) out[i === 0 ? '_' : p] = i === 0 ? p : 'on';
    else out[p.slice(0, eq)] = p.slice(eq + 1);
  });
  return out;
}

function die(message, code = 1) {
  process.stderr.write(`${PROG}: ${message}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const o = { chardevs: new Map(), devices: [], netdevs: [], flags: new Set(), mon: undefined, serial: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (kFlags.has(a)) { o.flags.add(a); continue; }
    if (!kValued.has(a)) die(`${a}: invalid option (the stand-in spec/unit/qemu-standin.mjs does not know it: teach it)`);
    const v = argv[++i];
    if (v === undefined) die(`${a}: requires an argument`);
    switch (a) {
      case '-name': o.name = parseOpts(v)._; break;
      case '-machine': case '-M': o.machine = parseOpts(v)._; break;
      case '-m': o.memory = v; break;
      case '-kernel': o.kernel = v; break;
      case '-initrd': o.initrd = v; break;
      case '-append': o.append = v; break;
      case '-chardev': { const c = parseOpts(v); o.chardevs.set(c.id, { ...c, raw: v }); break; }
      case '-mon': o.mon = parseOpts(v); break;
      case '-serial': o.serial = v; break;
      case '-device': o.devices.push(parseOpts(v)); break;
      case '-netdev': o.netdevs.push({ ...parseOpts(v), raw: v }); break;
      case '-incoming': o.incoming = v; break;
      case '-pidfile': o.pidfile = v; break;
      case '-object': { const ob = parseOpts(v); if (ob._ === 'memory-backend-file') o.ramFile = { path: ob['mem-path'], share: ob.share === 'on' }; break; }
      default: break; // accepted, nothing to emulate
    }
  }
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const name = opts.name ?? 'standin';

function chardevFor(what, id) {
  const c = opts.chardevs.get(id);
  if (!c) die(`${what}: chardev '${id}' not found`);
  if (c._ !== 'socket' || !c.path) die(`${what}: the stand-in emulates unix socket chardevs only (${c.raw})`);
  return c;
}

if (!opts.mon?.chardev || (opts.mon.mode ?? 'readline') !== 'control') die('no QMP monitor (-mon chardev=ID,mode=control)');
const qmpDev = chardevFor('-mon', opts.mon.chardev);
if (!opts.serial?.startsWith('chardev:')) die('no serial console (-serial chardev:ID)');
const conDev = chardevFor('-serial', opts.serial.slice('chardev:'.length));
const port = opts.devices.find((d) => d._ === 'virtserialport' && d.name === AGENT_PORT_NAME);
if (!port) die(`no virtserialport named ${AGENT_PORT_NAME}`);
const agentDev = chardevFor('virtserialport', port.chardev);
for (const [what, file] of [['kernel', opts.kernel], ['initrd', opts.initrd]]) {
  if (file === undefined) { if (what === 'kernel') die('no -kernel'); continue; }
  try { fs.accessSync(file, fs.constants.R_OK); } catch { die(`could not load ${what} '${file}'`); }
}
if (opts.incoming !== undefined && opts.incoming !== 'defer') die(`-incoming ${opts.incoming}: the stand-in supports -incoming defer only`);
const memoryBytes = parseMemory(opts.memory ?? '128M');
// Guest RAM in a file (memory-backend-file), as QEMU opens it: a missing shared file is created
// at the guest's size; a private one must already be that size (a snapshot's RAM image).
if (opts.ramFile) {
  const { path: ramPath, share } = opts.ramFile;
  const size = fs.existsSync(ramPath) ? fs.statSync(ramPath).size : -1;
  if (size === -1 && !share) die(`memory-backend-file: ${ramPath}: No such file or directory`);
  if (size <= 0) {
    fs.closeSync(fs.openSync(ramPath, 'a'));
    fs.truncateSync(ramPath, memoryBytes);
  }
  else if (size !== memoryBytes) die(`memory-backend-file: backing store size 0x${size.toString(16)} does not match 'size' option 0x${memoryBytes.toString(16)}`);
}
if (opts.pidfile) fs.writeFileSync(opts.pidfile, `${process.pid}\n`);

function parseMemory(v) {
  const m = /^(\d+)([KMGT]?)B?$/i.exec(v);
  if (!m) die(`-m ${v}: invalid size`);
  const mult = { '': 1024 * 1024, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[m[2].toUpperCase()];
  return Number(m[1]) * mult;
}

// ---------------------------------------------------------------------------------------------
// Machine state

/** QEMU's run state: running, paused, inmigrate, postmigrate, prelaunch, shutdown. */
let runstate = opts.incoming ? 'inmigrate' : opts.flags.has('-S') ? 'prelaunch' : 'running';
let autostart = !opts.flags.has('-S');
let rebootAction = opts.flags.has('-no-reboot') ? 'shutdown' : 'reset';
let shutdownAction = opts.flags.has('-no-shutdown') ? 'pause' : 'poweroff';
let migrationEvents = false;
/** query-migrate's answer: {} before any migration. */
let migration = {};
let incomingStarted = false;
let exiting = false;
/** Nanoseconds the guest's realtime clock is ahead of the host's. */
let clockOffsetNs = 0n;

function isRunning() {
  return runstate === 'running';
}

function setRunstate(next) {
  const was = isRunning();
  runstate = next;
  if (was && !isRunning()) emitEvent('STOP');
  if (!was && isRunning()) emitEvent('RESUME');
  link.flush();
}

// ---------------------------------------------------------------------------------------------
// Console: server socket, log file, guest output

try { fs.unlinkSync(conDev.path); } catch { /* absent */ }
const consoleLog = conDev.logfile ? fs.openSync(conDev.logfile, conDev.logappend === 'on' ? 'a' : 'w') : undefined;
let consoleClient;
const consoleWaiting = [];

function guestOutput(bytes) {
  if (consoleLog !== undefined) fs.writeSync(consoleLog, bytes);
  if (consoleClient && !consoleClient.destroyed) consoleClient.write(bytes);
}

function serveConsole(sock) {
  consoleClient = sock;
  sock.on('data', (d) => guestOutput(d)); // the tty echoes what is typed
  sock.on('error', () => {});
  sock.on('close', () => {
    if (consoleClient === sock) consoleClient = undefined;
    const next = consoleWaiting.shift();
    if (next) { next.resume(); serveConsole(next); }
  });
}

const consoleServer = net.createServer({ pauseOnConnect: true }, (sock) => {
  // QEMU's chardev serves one client; the next waits until it leaves.
  if (consoleClient) { consoleWaiting.push(sock); return; }
  sock.resume();
  serveConsole(sock);
});
consoleServer.listen(conDev.path);
guestOutput(Buffer.from(opts.incoming ? 'stand-in console (waiting for an incoming migration)\n' : 'stand-in console\n'));

// ---------------------------------------------------------------------------------------------
// The agent: a real provium-agent in --listen mode, one per guest boot

const agentBin = env.PROVIUM_AGENT_BIN ? path.resolve(env.PROVIUM_AGENT_BIN) : path.resolve(here, '../../agent/build/provium-agent');
const agentListenPath = path.join(path.dirname(agentDev.path), 'standin-agent.sock');
const noAgent = env.STANDIN_NO_AGENT === '1';
const agentDelayMs = Number(env.STANDIN_AGENT_DELAY_MS ?? 0);

/** {child, ready, exited: Promise<void>} of the current agent. */
let agent;
let agentTimer;

function setprivPrefix() {
  for (const dir of ['/usr/bin', '/bin', '/usr/sbin', '/sbin']) {
    const p = path.join(dir, 'setpriv');
    if (!fs.existsSync(p)) continue;
    // pdeathsig: the agent dies with this process, even when it is SIGKILLed.
    const caps = process.getuid?.() === 0 ? ['--bounding-set', '-sys_time,-sys_boot,-sys_module,-sys_admin'] : [];
    return [p, '--pdeathsig', 'KILL', ...caps, '--'];
  }
  return [];
}

function startAgent() {
  if (noAgent || exiting) return;
  if (!fs.existsSync(agentBin)) {
    process.stderr.write(`${PROG}: stand-in: agent binary ${agentBin} is missing (make -C agent)\n`);
    guestOutput(Buffer.from(`stand-in: no agent binary at ${agentBin}\n`));
    return;
  }
  const argv = [...setprivPrefix(), agentBin, '--listen', agentListenPath];
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  const me = { child, ready: false, exited: new Promise((resolve) => child.once('exit', () => resolve())) };
  agent = me;
  let seen = '';
  child.stderr.on('data', (d) => {
    guestOutput(d);
    if (me.ready) return;
    seen += d.toString('utf8');
    if (seen.includes('provium-agent: ready')) {
      me.ready = true;
      link.agentReady();
    }
  });
  child.once('error', (err) => guestOutput(Buffer.from(`stand-in: cannot start the agent: ${err.message}\n`)));
  child.once('exit', (code, signal) => {
    if (agent === me && !exiting) guestOutput(Buffer.from(`stand-in: agent exited (${signal ?? `code ${code}`})\n`));
  });
}

function bootGuest() {
  clearTimeout(agentTimer);
  if (agentDelayMs > 0) agentTimer = setTimeout(startAgent, agentDelayMs);
  else startAgent();
}

/** Every process under `pid` (from /proc), deepest last. */
function descendants(pid) {
  const children = new Map();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    try { stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8'); } catch { continue; }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(fields[1]);
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid).push(Number(entry));
  }
  const out = [];
  const walk = (p) => { for (const c of children.get(p) ?? []) { out.push(c); walk(c); } };
  walk(pid);
  return out;
}

/** Kills the agent and everything it spawned (the guest is gone), and waits for the agent. */
async function killAgent() {
  clearTimeout(agentTimer);
  const a = agent;
  agent = undefined;
  link.agentGone();
  if (!a) return;
  const pid = a.child.pid;
  if (pid !== undefined && a.child.exitCode === null && a.child.signalCode === null) {
    // Frozen first so that it cannot spawn more while its tree is collected.
    try { process.kill(pid, 'SIGSTOP'); } catch { /* gone */ }
    for (const d of descendants(pid)) {
      try { process.kill(-d, 'SIGKILL'); } catch { /* not a group leader */ }
      try { process.kill(d, 'SIGKILL'); } catch { /* gone */ }
    }
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
  await Promise.race([a.exited, sleep(2000)]);
}

// ---------------------------------------------------------------------------------------------
// The agent chardev: broker connection <-> agent listen socket

const decoder = new Decoder({ useBigInt64: true });
const encoder = new Encoder({ useBigInt64: true, ignoreUndefined: true });

function frame(value) {
  const body = encoder.encode(value);
  const out = Buffer.alloc(4 + body.byteLength);
  out.writeUInt32BE(body.byteLength, 0);
  out.set(body, 4);
  return out;
}

function nowNs() {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
}

function timeData(ns) {
  const sec = ns / 1_000_000_000n - (ns % 1_000_000_000n < 0n ? 1n : 0n);
  const nsec = ns - sec * 1_000_000_000n;
  return { sec: Number(sec), nsec: Number(nsec) };
}

function isInt(v) {
  return typeof v === 'bigint' || (typeof v === 'number' && Number.isInteger(v));
}

/** The guest clock, kept here so that the host's is never set: the reply, or undefined to relay. */
function clockReply(msg) {
  const { id, kind } = msg;
  const data = msg.data ?? {};
  const einval = (what) => ({ id, kind: 'err', data: { errno: 22, message: `Invalid argument (${what})` } });
  switch (kind) {
    case 'get_time':
      return { id, kind: 'ok', data: timeData(nowNs() + clockOffsetNs) };
    case 'set_time': {
      if (!isInt(data.sec) || !isInt(data.nsec)) return einval('sec and nsec must be integers');
      if (data.nsec < 0 || data.nsec > 999_999_999) return einval('nsec out of range');
      clockOffsetNs = BigInt(data.sec) * 1_000_000_000n + BigInt(data.nsec) - nowNs();
      return { id, kind: 'ok', data: {} };
    }
    case 'advance_time': {
      if (!isInt(data.ns)) return einval('ns must be an integer');
      clockOffsetNs += BigInt(data.ns);
      return { id, kind: 'ok', data: timeData(nowNs() + clockOffsetNs) };
    }
    default:
      return undefined;
  }
}

const link = {
  /** The broker's connection being served, and those waiting for it to leave. */
  host: undefined,
  waiting: [],
  /** The connection to the agent's listen socket. */
  guest: undefined,
  guestConnecting: false,
  /** Frames for the agent, bytes for the host: held while the guest does not run. */
  toGuest: [],
  toHost: [],
  inBuf: Buffer.alloc(0),
  /** Set after an oversized frame: the rest is relayed unparsed (the agent reports it). */
  raw: false,

  accept(sock) {
    if (this.host) { this.waiting.push(sock); return; }
    this.serve(sock);
  },

  serve(sock) {
    this.host = sock;
    this.inBuf = Buffer.alloc(0);
    this.raw = false;
    sock.on('data', (d) => this.fromHost(d));
    sock.on('error', () => {});
    sock.on('close', () => {
      if (this.host !== sock) return;
      // A host close of the port: the agent sees its connection end and starts a new session.
      this.host = undefined;
      this.toGuest = [];
      this.toHost = [];
      this.guest?.destroy();
      this.guest = undefined;
      const next = this.waiting.shift();
      if (next) this.serve(next);
    });
    if (!noAgent) sock.resume(); // with no agent nobody ever reads the port
    this.connectGuest();
  },

  fromHost(chunk) {
    if (this.raw) { this.toGuest.push(chunk); this.flush(); return; }
    this.inBuf = this.inBuf.length ? Buffer.concat([this.inBuf, chunk]) : chunk;
    while (this.inBuf.length >= 4) {
      const len = this.inBuf.readUInt32BE(0);
      if (len > MAX_FRAME_BYTES) {
        this.raw = true;
        this.toGuest.push(this.inBuf);
        this.inBuf = Buffer.alloc(0);
        break;
      }
      if (this.inBuf.length < 4 + len) break;
      const whole = this.inBuf.subarray(0, 4 + len);
      this.inBuf = this.inBuf.subarray(4 + len);
      let reply;
      try {
        const msg = decoder.decode(whole.subarray(4));
        if (msg && typeof msg === 'object' && !Array.isArray(msg)) reply = clockReply(msg);
      } catch {
        // Not ours to judge: the agent answers a bad frame.
      }
      if (reply) this.toHost.push(frame(reply));
      else this.toGuest.push(Buffer.from(whole));
    }
    this.flush();
  },

  connectGuest() {
    if (!this.host || this.guest || this.guestConnecting || !agent?.ready) return;
    this.guestConnecting = true;
    const forAgent = agent;
    const sock = net.createConnection(agentListenPath);
    sock.once('connect', () => {
      this.guestConnecting = false;
      if (agent !== forAgent || !this.host) { sock.destroy(); return; }
      this.guest = sock;
      sock.on('data', (d) => { this.toHost.push(d); this.flush(); });
      sock.on('close', () => {
        if (this.guest === sock) this.guest = undefined;
      });
      this.flush();
    });
    sock.once('error', () => {
      this.guestConnecting = false;
      sock.destroy();
      // The agent went away (reset, exit): a new one connects when it is ready.
    });
  },

  agentReady() {
    this.connectGuest();
  },

  agentGone() {
    this.guest?.destroy();
    this.guest = undefined;
  },

  /** SIGTTIN/SIGTTOU: nothing moves any more, whatever the run state says. */
  frozen: false,

  flush() {
    if (!isRunning() || exiting || this.frozen) return;
    if (this.guest && !this.guest.destroyed) {
      for (const b of this.toGuest) this.guest.write(b);
      this.toGuest = [];
    }
    if (this.host && !this.host.destroyed) {
      for (const b of this.toHost) this.host.write(b);
      this.toHost = [];
    }
  },
};

try { fs.unlinkSync(agentDev.path); } catch { /* absent */ }
const agentServer = net.createServer({ pauseOnConnect: true }, (sock) => link.accept(sock));
agentServer.listen(agentDev.path);

// ---------------------------------------------------------------------------------------------
// QMP

let qmp;
let negotiated = false;

function qmpSend(obj) {
  if (qmp && !qmp.destroyed) qmp.write(`${JSON.stringify(obj)}\r\n`);
}

function emitEvent(event, data) {
  if (!negotiated) return;
  const t = Date.now();
  const msg = { event, timestamp: { seconds: Math.floor(t / 1000), microseconds: (t % 1000) * 1000 } };
  if (data !== undefined) msg.data = data;
  qmpSend(msg);
}

class QmpFail extends Error {
  constructor(desc, cls = 'GenericError') {
    super(desc);
    this.cls = cls;
  }
}

function setMigration(status, extra = {}) {
  migration = { ...migration, status, ...extra };
  if (migrationEvents) emitEvent('MIGRATION', { status });
}

function unixPath(uri) {
  if (typeof uri !== 'string' || !uri.startsWith('unix:')) throw new QmpFail(`the stand-in supports unix: migration URIs only, got ${JSON.stringify(uri)}`);
  return uri.slice('unix:'.length);
}

/** Outgoing migration: the placeholder stream to the broker's socket. */
function migrateOut(sockPath) {
  const started = Date.now();
  const wasRunning = isRunning();
  const savedState = wasRunning ? 'running' : runstate === 'postmigrate' ? 'paused' : runstate;
  migration = {};
  setMigration('setup');
  const sock = net.createConnection(sockPath);
  let failed = false;
  sock.once('error', (err) => {
    if (failed) return;
    failed = true;
    setMigration('failed', { 'error-desc': `Failed to connect to '${sockPath}': ${err.message}` });
  });
  sock.once('connect', () => {
    setMigration('active');
    // QEMU stops a running guest for the last pass.
    if (isRunning()) setRunstate('finish-migrate');
    const header = Buffer.from(JSON.stringify({ standin: 1, name, machine: opts.machine, memoryBytes, runstate: savedState }));
    const padding = Number(env.STANDIN_SNAPSHOT_BYTES ?? 65536);
    const head = Buffer.alloc(12);
    MIGRATION_MAGIC.copy(head, 0);
    head.writeUInt32BE(MIGRATION_VERSION, 4);
    head.writeUInt32BE(header.length, 8);
    const trailer = Buffer.alloc(8);
    trailer.writeDoubleBE(padding, 0);
    sock.write(head);
    sock.write(header);
    sock.write(trailer);
    sock.write(Buffer.alloc(padding));
    sock.end(() => {
      if (migration.status !== 'active') return; // cancelled
      runstate = 'postmigrate';
      const total = 12 + header.length + 8 + padding;
      setMigration('completed', { 'total-time': Date.now() - started, ram: { transferred: total, total: memoryBytes } });
      link.flush();
    });
  });
  return sock;
}

let outgoing;

/** Incoming migration: listen, read a stream, check it, load it. */
function migrateIn(sockPath) {
  try { fs.unlinkSync(sockPath); } catch { /* absent */ }
  const server = net.createServer((sock) => {
    server.close();
    setMigration('active');
    const chunks = [];
    sock.on('data', (d) => chunks.push(d));
    sock.on('error', () => {});
    sock.on('end', () => {
      sock.destroy();
      const stream = Buffer.concat(chunks);
      const why = checkStream(stream);
      if (why !== undefined) {
        process.stderr.write(`${PROG}: ${why}\n${PROG}: load of migration failed: Invalid argument\n`);
        setMigration('failed', { 'error-desc': 'load of migration failed: Invalid argument' });
        void shutdown(1, undefined);
        return;
      }
      const saved = JSON.parse(stream.subarray(12, 12 + stream.readUInt32BE(8)).toString('utf8'));
      setMigration('completed');
      guestOutput(Buffer.from('stand-in console (restored from a migration stream: a fresh agent)\n'));
      // As QEMU: a guest saved running starts if autostart; otherwise it keeps the saved state.
      if (saved.runstate === 'running' && autostart) setRunstate('running');
      else setRunstate(saved.runstate === 'running' ? 'paused' : saved.runstate);
    });
  });
  server.on('error', (err) => {
    setMigration('failed', { 'error-desc': err.message });
  });
  return new Promise((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
    server.listen(sockPath);
  });
}

function checkStream(buf) {
  if (buf.length < 12 || !buf.subarray(0, 4).equals(MIGRATION_MAGIC)) return 'Not a migration stream';
  if (buf.readUInt32BE(4) !== MIGRATION_VERSION) return `Unsupported migration stream version ${buf.readUInt32BE(4)}`;
  const hlen = buf.readUInt32BE(8);
  let header;
  try { header = JSON.parse(buf.subarray(12, 12 + hlen).toString('utf8')); } catch { return 'stand-in: bad stream header'; }
  if (header.standin !== 1) return 'stand-in: not a stand-in stream';
  if (header.memoryBytes !== memoryBytes) {
    return `Length mismatch: pc.ram: 0x${header.memoryBytes.toString(16)} in != 0x${memoryBytes.toString(16)}: Invalid argument`;
  }
  if (buf.length < 12 + hlen + 8) return 'stand-in: truncated stream';
  const padding = buf.readDoubleBE(12 + hlen);
  if (buf.length !== 12 + hlen + 8 + padding) return `stand-in: truncated stream (${buf.length} bytes)`;
  return undefined;
}

/** One QMP command: its `return` value, or a QmpFail. */
async function execute(cmd, args = {}) {
  if (!negotiated) {
    if (cmd === 'qmp_capabilities') { negotiated = true; return {}; }
    throw new QmpFail("Expecting capabilities negotiation with 'qmp_capabilities'", 'CommandNotFound');
  }
  switch (cmd) {
    case 'qmp_capabilities':
      throw new QmpFail('Capabilities negotiation is already complete, command ignored', 'CommandNotFound');
    case 'query-status':
      return { running: isRunning(), singlestep: false, status: runstate };
    case 'query-version':
      return { qemu: { major: 7, minor: 2, micro: 0 }, package: ' (provium stand-in)' };
    case 'stop':
      if (runstate === 'inmigrate') autostart = false;
      else if (isRunning()) setRunstate('paused');
      return {};
    case 'cont':
      if (runstate === 'shutdown') throw new QmpFail('Resetting the Virtual Machine is required');
      if (runstate === 'inmigrate') { autostart = true; return {}; }
      if (!isRunning()) setRunstate('running');
      return {};
    case 'set-action':
      if (args.reboot !== undefined) rebootAction = args.reboot;
      if (args.shutdown !== undefined) shutdownAction = args.shutdown;
      return {};
    case 'system_reset':
      setImmediate(() => void systemReset());
      return {};
    case 'system_powerdown':
      setImmediate(() => {
        emitEvent('POWERDOWN');
        if (env.STANDIN_IGNORE_POWERDOWN === '1' || !agent) return;
        // The standalone agent's power-button path: SIGTERM everything, sync, power off.
        setTimeout(() => void guestShutdown(), 50);
      });
      return {};
    case 'quit':
      setImmediate(() => void shutdown(0, { guest: false, reason: 'host-qmp-quit' }));
      return {};
    case 'migrate-set-capabilities':
      for (const c of args.capabilities ?? []) if (c.capability === 'events') migrationEvents = Boolean(c.state);
      return {};
    case 'migrate-set-parameters':
      return {};
    case 'query-migrate':
      return migration;
    case 'migrate': {
      if (migration.status === 'active' || migration.status === 'setup') throw new QmpFail('There\'s a migration process in progress');
      if (runstate === 'inmigrate') throw new QmpFail('Guest is waiting for an incoming migration');
      const p = unixPath(args.uri);
      if (env.STANDIN_CRASH_ON_MIGRATE === '1') { setImmediate(crash); return {}; }
      setImmediate(() => { outgoing = migrateOut(p); });
      return {};
    }
    case 'migrate_cancel':
      if (migration.status === 'active' || migration.status === 'setup') {
        outgoing?.destroy();
        setMigration('cancelled');
        if (runstate === 'finish-migrate') setRunstate('running');
      }
      return {};
    case 'migrate-incoming': {
      if (opts.incoming === undefined) throw new QmpFail("'-incoming' was not specified on the command line");
      if (incomingStarted) throw new QmpFail('The incoming migration has already been started');
      incomingStarted = true;
      const p = unixPath(args.uri);
      migration = {};
      setMigration('setup');
      await migrateIn(p).catch((err) => { throw new QmpFail(`Failed to listen on '${p}': ${err.message}`); });
      return {};
    }
    case 'human-monitor-command':
      return '';
    default:
      throw new QmpFail(`The command ${cmd} has not been found`, 'CommandNotFound');
  }
}

async function systemReset() {
  if (rebootAction === 'shutdown') {
    // -no-reboot: QEMU turns a reset request into a shutdown.
    await shutdown(0, { guest: false, reason: 'host-qmp-system-reset' });
    return;
  }
  emitEvent('RESET', { guest: false, reason: 'host-qmp-system-reset' });
  await killAgent();
  guestOutput(Buffer.from('stand-in console (reset: a fresh agent)\n'));
  bootGuest();
}

/** The guest powered itself off. */
async function guestShutdown() {
  if (shutdownAction === 'pause') {
    emitEvent('SHUTDOWN', { guest: true, reason: 'guest-shutdown' });
    await killAgent();
    setRunstate('shutdown');
    return;
  }
  await shutdown(0, { guest: true, reason: 'guest-shutdown' });
}

function onQmpData() {
  let buf = '';
  return (chunk) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line) continue;
      let msg;
      try { msg = JSON.parse(line); } catch {
        qmpSend({ error: { class: 'GenericError', desc: 'JSON parse error' } });
        continue;
      }
      const id = msg.id;
      const cmd = msg.execute;
      if (typeof cmd !== 'string') {
        qmpSend({ error: { class: 'GenericError', desc: "QMP input lacks member 'execute'" }, ...(id !== undefined ? { id } : {}) });
        continue;
      }
      execute(cmd, msg.arguments).then(
        (ret) => qmpSend({ return: ret, ...(id !== undefined ? { id } : {}) }),
        (err) => qmpSend({ error: { class: err.cls ?? 'GenericError', desc: err.message }, ...(id !== undefined ? { id } : {}) }),
      );
    }
  };
}

// ---------------------------------------------------------------------------------------------
// Exits

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Every way out: SHUTDOWN (unless it is a crash), the agent and its processes killed, exit. */
async function shutdown(code, shutdownEvent, stderr) {
  if (exiting) return;
  if (shutdownEvent) emitEvent('SHUTDOWN', shutdownEvent);
  exiting = true;
  await killAgent();
  if (stderr) process.stderr.write(stderr.endsWith('\n') ? stderr : `${stderr}\n`);
  link.host?.destroy();
  consoleClient?.destroy();
  if (consoleLog !== undefined) fs.closeSync(consoleLog);
  if (qmp && !qmp.destroyed) await Promise.race([new Promise((resolve) => qmp.end(resolve)), sleep(500)]);
  process.exit(code);
}

function crash() {
  const code = Number(env.STANDIN_EXIT_CODE ?? 1);
  void shutdown(code, undefined, env.STANDIN_STDERR ?? `${PROG}: stand-in: simulated crash (exit code ${code})`);
}

for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.on(sig, () => {
    const n = { SIGTERM: 15, SIGINT: 2, SIGHUP: 1 }[sig];
    void shutdown(0, { guest: false, reason: 'host-signal' }, `${PROG}: terminating on signal ${n}`);
  });
}
process.on('SIGUSR2', crash);
process.on('SIGWINCH', () => { if (isRunning()) setRunstate('paused'); });
process.on('SIGTTIN', () => { link.frozen = true; });
process.on('SIGTTOU', () => {
  link.frozen = true;
  const portId = port.id;
  if (portId !== undefined) emitEvent('VSERPORT_CHANGE', { id: portId, open: false });
});
process.on('SIGPWR', () => {
  guestOutput(Buffer.from('Kernel panic - not syncing: stand-in: simulated panic\n'));
  emitEvent('GUEST_PANICKED', { action: 'poweroff', info: { type: 'hyper-v' } });
  void shutdown(0, { guest: true, reason: 'guest-panic' });
});
process.on('SIGURG', () => void guestShutdown());

// ---------------------------------------------------------------------------------------------
// Start-up: as QEMU, the server chardevs exist before the QMP greeting goes out.

if (env.STANDIN_FAIL_LAUNCH === '1') {
  const code = Number(env.STANDIN_EXIT_CODE ?? 1);
  process.stderr.write(`${env.STANDIN_STDERR ?? `${PROG}: stand-in: simulated launch failure`}\n`);
  process.exit(code);
}

await Promise.all([consoleServer, agentServer].map((s) => (s.listening ? undefined : new Promise((resolve) => s.once('listening', resolve)))));

for (const n of opts.netdevs) {
  if (n._ !== 'stream' || n.server === 'on') continue;
  const p = n['addr.path'];
  await new Promise((resolve) => {
    const sock = net.createConnection(p);
    sock.once('connect', () => { sock.on('data', () => {}); sock.on('error', () => {}); resolve(); });
    sock.once('error', (err) => die(`-netdev ${n.raw}: Failed to connect to '${p}': ${err.message}`));
  });
}

if (qmpDev.server === 'on') {
  try { fs.unlinkSync(qmpDev.path); } catch { /* absent */ }
  net.createServer((sock) => {
    if (qmp && !qmp.destroyed) { sock.destroy(); return; }
    startQmp(sock);
  }).listen(qmpDev.path);
} else {
  const sock = net.createConnection(qmpDev.path);
  sock.once('error', (err) => die(`-chardev ${qmpDev.raw}: Failed to connect to '${qmpDev.path}': ${err.message}`));
  sock.once('connect', () => {
    sock.removeAllListeners('error');
    startQmp(sock);
  });
}

function startQmp(sock) {
  qmp = sock;
  negotiated = false;
  sock.setEncoding('utf8');
  sock.on('data', onQmpData());
  sock.on('error', () => {});
  // QEMU runs on when its QMP client goes away.
  qmpSend({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: ' (provium stand-in)' }, capabilities: ['oob'] } });
}

if (runstate !== 'shutdown') bootGuest();
if (env.STANDIN_EXIT_AFTER_MS !== undefined) setTimeout(crash, Number(env.STANDIN_EXIT_AFTER_MS));
