// Which directions of a bridge are cut: directed partitions between two ports, the whole
// bridge at once (partitionAll), and isolated ports (cut from every other port). Names are
// port names; ports that do not exist yet are allowed, so a fault can be set before a VM attaches
// (the caller checks membership against its own graph).

export interface Direction {
  from: string;
  to: string;
}

/** Why a direction is cut, for drop accounting; undefined when it is open. */
export type CutReason = 'partition' | 'isolated';

function key(from: string, to: string): string {
  return `${from}\0${to}`;
}

function checkName(name: unknown, what: string): asserts name is string {
  if (typeof name !== 'string' || name === '') {
    throw new Error(`${what} must be a port name (non-empty string); got ${JSON.stringify(name)}`);
  }
}

/** Checks a pair of distinct port names. */
export function checkPair(a: string, b: string): void {
  checkName(a, 'partition endpoint');
  checkName(b, 'partition endpoint');
  if (a === b) throw new Error(`cannot partition "${a}" from itself`);
}

export class PartitionTable {
  private readonly _cut = new Set<string>();
  private readonly _isolated = new Set<string>();
  private _all = false;

  /** Cuts frames from `from` to `to` only. */
  cut(from: string, to: string): void {
    checkPair(from, to);
    this._cut.add(key(from, to));
  }

  /** Reopens frames from `from` to `to`; lenient when the direction was not cut. */
  heal(from: string, to: string): void {
    checkPair(from, to);
    this._cut.delete(key(from, to));
  }

  /** Cuts every direction between distinct ports, including ports added later. */
  cutAll(): void {
    this._all = true;
  }

  /** Removes every partition, the partitionAll state and every isolation. */
  healAll(): void {
    this._all = false;
    this._cut.clear();
    this._isolated.clear();
  }

  isolate(name: string): void {
    checkName(name, 'isolated port');
    this._isolated.add(name);
  }

  unisolate(name: string): void {
    checkName(name, 'isolated port');
    this._isolated.delete(name);
  }

  isIsolated(name: string): boolean {
    return this._isolated.has(name);
  }

  /** Whether frames from `from` to `to` are cut by a partition (isolation not included). */
  isCut(from: string, to: string): boolean {
    return this._all || this._cut.has(key(from, to));
  }

  /** Why frames from `from` to `to` cannot pass, or undefined when they can. */
  blocked(from: string, to: string): CutReason | undefined {
    if (this._isolated.has(from) || this._isolated.has(to)) return 'isolated';
    if (this.isCut(from, to)) return 'partition';
    return undefined;
  }

  get allCut(): boolean {
    return this._all;
  }

  /** The explicitly cut directions (partitionAll is reported by `allCut`). */
  directions(): Direction[] {
    return [...this._cut].map((k) => {
      const [from, to] = k.split('\0') as [string, string];
      return { from, to };
    });
  }

  isolated(): string[] {
    return [...this._isolated];
  }
}
