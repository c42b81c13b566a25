// Snapshot and LabSnapshot (reference §1.16): the host file vm:snapshot() wrote, or the directory
// lab:snapshot() wrote. path(), size() (0 once gone; a lab's sums one directory level), delete()
// (idempotent; the broker removes the sidecars, or the whole directory). Only the broker touches
// snapshot files. vm:restore and lab:restore accept one or a bare path.

import { lua } from 'fengari';
import type { Args, LuaClass } from './args.js';
import { pushIntegral, pushText } from './values.js';

export class Snapshot {
  constructor(
    readonly path: string,
    /** Size the broker reported when it wrote the file. */
    readonly bytes: number,
  ) {}
}

function call<K extends 'snapshot.size' | 'snapshot.delete'>(a: Args, op: K, path: string) {
  try {
    return a.rt.rpc.call(op, { path });
  } catch (err) {
    throw a.error(`${path}: ${(err as Error).message}`);
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
      pushIntegral(a.L, call(a, 'snapshot.size', s.path).bytes);
      return 1;
    },
    delete(s, a) {
      call(a, 'snapshot.delete', s.path);
      lua.lua_pushboolean(a.L, true);
      return 1;
    },
  },
};

export const LabSnapshotClass: LuaClass<Snapshot> = {
  ...SnapshotClass,
  typeName: 'LabSnapshot',
  toString: (s) => `lab_snapshot(${s.path})`,
};
