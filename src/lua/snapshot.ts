// Snapshot (reference §1.16): the host file vm:snapshot() wrote. path(), size() (0 once the file
// is gone), delete() (idempotent; also removes the broker's `<path>.json` sidecar). vm:restore
// accepts it or a bare path.

import { rmSync, statSync } from 'node:fs';
import { lua } from 'fengari';
import type { LuaClass } from './runtime.js';
import { pushIntegral, pushText } from './values.js';

export class Snapshot {
  constructor(
    readonly path: string,
    /** Size the broker reported when it wrote the file. */
    readonly bytes: number,
  ) {}

  size(): number {
    try {
      return statSync(this.path).size;
    } catch {
      return 0;
    }
  }
}

export const SnapshotClass: LuaClass<Snapshot> = {
  typeName: 'Snapshot',
  selfName: 'snap',
  toString: (s) => `snapshot(${s.path})`,
  methods: {
    path(s, a) {
      pushText(a.L, s.path);
      return 1;
    },
    size(s, a) {
      pushIntegral(a.L, s.size());
      return 1;
    },
    delete(s, a) {
      try {
        rmSync(s.path, { force: true });
        // The broker's sidecar describing how to relaunch the guest.
        rmSync(`${s.path}.json`, { force: true });
      } catch (err) {
        throw a.error(`cannot delete ${s.path}: ${(err as Error).message}`);
      }
      lua.lua_pushboolean(a.L, true);
      return 1;
    },
  },
};
