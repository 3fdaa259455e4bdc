type LogFn = (obj: object | string, msg?: string) => void;

/** pino-compatible */
export interface PoolLogger {
  info: LogFn;
  warn: LogFn;
  error: LogFn;
}

/**
 * Every worker loads the same model on the same device, so each says the same things (the device probe's
 * warning, the engine's notice that it decodes one sequence at a time): one line per distinct message.
 */
export class LogOnce {
  private readonly said = new Set<string>();

  constructor(private readonly logger: PoolLogger) {}

  line(level: 'info' | 'warn', threadId: number, message: string): void {
    const key = `${level}\0${message}`;
    if (this.said.has(key)) return;
    this.said.add(key);
    this.logger[level]({ threadId }, message);
  }
}
