// The error a Connect-client call failed with, as a ConnectError (fails the test if it succeeded).
import { ConnectError } from '@connectrpc/connect';

export async function connectError(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error('expected the call to fail, it succeeded');
}
