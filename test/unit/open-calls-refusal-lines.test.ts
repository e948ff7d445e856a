// The log line about refused calls and connections (src/transport/open-calls.ts):
// one at the first refusal, then the rest of a burst when its 5 s window ends,
// counted by reason. It was written only when a later refusal came, under that
// one's reason and with every count since (probe 61: a connection flood said
// as "HTTP2_PROTOCOL_ERROR" minutes later, and a burst's tail never said).
// A real TCP server behind the connection bound, real sockets.
import net, { type AddressInfo } from 'node:net';
import { afterAll, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { OpenCalls } from '../../src/transport/open-calls.js';

const lines: { msg?: string; refused?: Record<string, number> }[] = [];
const log = createLogger({ level: 'warn', destination: { write: (l: string) => void lines.push(JSON.parse(l)) } });
const server = net.createServer((socket) => socket.on('error', () => {}));
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

it('the first refusal is logged at once, the rest of the burst when its window ends, each under its own reason', async () => {
  const calls = new OpenCalls(10, { callMs: 30_000, streamingMs: 30_000, maxStreaming: 1 }, log);
  calls.guardConnections(server, 1);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as AddressInfo).port;
  const sockets: net.Socket[] = [];
  const connect = () => new Promise<void>((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    sockets.push(s);
    s.on('error', () => resolve());
    s.on('close', () => resolve());
    s.on('connect', () => setTimeout(resolve, 100));
  });
  await connect(); // held: the one the bound allows
  for (let i = 0; i < 4; i++) await connect(); // refused on accept
  const refusals = () => lines.filter((l) => l.msg?.startsWith('refusing calls or connections'));
  expect(refusals().map((l) => l.refused)).toEqual([{ CONNECTIONS_LIMIT: 1 }]);
  await new Promise((r) => setTimeout(r, 5_500));
  expect(refusals().map((l) => l.refused)).toEqual([{ CONNECTIONS_LIMIT: 1 }, { CONNECTIONS_LIMIT: 3 }]);
  for (const s of sockets) s.destroy();
}, 15_000);
