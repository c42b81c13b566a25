// Signal names as `proc:kill` / `worker:kill` accept them (seed 003): case-insensitive, with or
// without the `sig` prefix, or the number itself.

export const kSignals: Readonly<Record<string, number>> = {
  hup: 1,
  int: 2,
  quit: 3,
  ill: 4,
  trap: 5,
  abrt: 6,
  bus: 7,
  fpe: 8,
  kill: 9,
  usr1: 10,
  segv: 11,
  usr2: 12,
  pipe: 13,
  alrm: 14,
  term: 15,
  chld: 17,
  cont: 18,
  stop: 19,
  tstp: 20,
  ttin: 21,
  ttou: 22,
  urg: 23,
  xcpu: 24,
  xfsz: 25,
  vtalrm: 26,
  prof: 27,
  winch: 28,
  io: 29,
  sys: 31,
};

/** The number for a signal name, or undefined. */
export function signalByName(name: string): number | undefined {
  let n = name.trim().toLowerCase();
  if (/^[0-9]+$/.test(n)) return Number(n);
  if (n.startsWith('sig')) n = n.slice(3);
  return Object.prototype.hasOwnProperty.call(kSignals, n) ? kSignals[n] : undefined;
}

/** `SIGTERM` for 15, `signal 40` for numbers without a name. */
export function signalName(signal: number): string {
  for (const [name, n] of Object.entries(kSignals)) if (n === signal) return `SIG${name.toUpperCase()}`;
  return `signal ${signal}`;
}

export const kCommonSignalNames = 'term, kill, int, hup, quit, stop, cont, usr1, usr2, alrm, pipe, chld, winch';
