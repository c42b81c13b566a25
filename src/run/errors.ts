// Errors that end a run before it starts: bad flags, bad paths, a broken environment. The CLI
// prints the message (which names the fix) and exits 2.

export class UsageError extends Error {
  override name = 'UsageError';
  readonly exitCode = 2;
}
