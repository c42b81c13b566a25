// Chunks of a byte stream waiting for a reader, with a wait that ends on new data, on the end
// of the stream or on a timeout. Shared by agent streams and console readers.

export class ChunkQueue {
  private readonly _chunks: Uint8Array[] = [];
  private _bufferedBytes = 0;
  private _ended = false;
  private _wake: (() => void) | undefined;

  get bufferedBytes(): number {
    return this._bufferedBytes;
  }

  /** The source ended (nothing more will be pushed). */
  get ended(): boolean {
    return this._ended;
  }

  get isEmpty(): boolean {
    return this._chunks.length === 0;
  }

  push(chunk: Uint8Array): void {
    if (this._ended || chunk.byteLength === 0) return;
    this._chunks.push(chunk);
    this._bufferedBytes += chunk.byteLength;
    this._wake?.();
  }

  end(): void {
    this._ended = true;
    this._wake?.();
  }

  /** Resolves when a chunk is there, the source ended, or `timeoutMs` passed. */
  async waitForData(timeoutMs: number): Promise<void> {
    if (this._chunks.length > 0 || this._ended || timeoutMs <= 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this._wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this._wake = undefined;
  }

  /** The oldest chunk. */
  shift(): Uint8Array | undefined {
    const chunk = this._chunks.shift();
    if (chunk) this._bufferedBytes -= chunk.byteLength;
    return chunk;
  }

  /** Everything buffered, as one chunk. */
  takeAll(): Uint8Array | undefined {
    if (this._chunks.length === 0) return undefined;
    const all = this._chunks.length === 1 ? this._chunks[0]! : new Uint8Array(Buffer.concat(this._chunks));
    this._chunks.length = 0;
    this._bufferedBytes = 0;
    return all;
  }
}
