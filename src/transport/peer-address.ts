import type { Socket } from "node:net";

// Node asks the kernel for a socket's peer address the first time
// `remoteAddress` is read, and keeps the answer; asked after the connection
// was reset, it has none (undefined). Read only once a request was handled,
// a client that wrote its requests and reset the connection at once had
// calls with no address, and a public client's per-IP budgets, which count
// that address, were skipped (probe 21: 400 of 400 Verifies past a spent
// budget, and Resends sending codes). So the address is read on accept, on
// the socket the protocol will own (the TLS socket under TLS), before any
// request byte is. A call that still has none is not served
// (../transport/caller.ts).

export function keepPeerAddress(socket: Socket): void {
  void socket.remoteAddress;
}
