// The agent-ready check used by the KVM probe: enough of the agent protocol to tell that a guest
// came up, and nothing more.

import { connect } from 'node:net';
import { decode, encode } from '@msgpack/msgpack';

const kMaxHelloFrameBytes = 1024 * 1024;

/**
 * The agent-ready check: one `hello` frame (4-byte BE length + msgpack) on the agent socket,
 * resolved with the reply's data when `{id: 1, kind: "ok"}` comes back. The full client is
 * src/agent/client.ts; this is only enough to tell that a guest came up.
 */
export function agentHello(socketPath: string, timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const sock = connect(socketPath);
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new Error(`no agent hello reply within ${timeoutMs} ms`)), timeoutMs);
    const finish = (err: Error | undefined, data?: Record<string, unknown>) => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err); else resolve(data!);
    };
    sock.on('error', (e) => finish(new Error(`agent socket ${socketPath}: ${e.message}`)));
    sock.on('close', () => finish(new Error('agent socket closed before the hello reply')));
    sock.on('connect', () => {
      const body = encode({ id: 1, kind: 'hello', data: { protocol_version: 1 } });
      const head = Buffer.alloc(4);
      head.writeUInt32BE(body.length);
      sock.write(Buffer.concat([head, body]));
    });
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 4) {
        const len = buf.readUInt32BE(0);
        if (len > kMaxHelloFrameBytes) return finish(new Error(`agent sent a ${len}-byte frame during hello`));
        if (buf.length < 4 + len) return;
        const frame = decode(buf.subarray(4, 4 + len)) as { id?: unknown; kind?: unknown; data?: unknown };
        buf = buf.subarray(4 + len);
        if (frame.id !== 1) continue; // id 0: unsolicited agent events.
        if (frame.kind === 'ok') return finish(undefined, (frame.data ?? {}) as Record<string, unknown>);
        return finish(new Error(`agent answered hello with ${String(frame.kind)}: ${JSON.stringify(frame.data)}`));
      }
    });
  });
}
