import type { EventEmitter } from "node:events";
import type { PeerCertificate } from "node:tls";
import { TLSSocket } from "node:tls";
import { createContextKey, createContextValues, type ContextValues } from "@connectrpc/connect";
import type { NodeRequest } from "./http-handler.js";

// What the connection says about the caller (its address, its verified client
// certificate), carried from the node request into connect's handler context,
// where src/transport/caller.ts needs it. Connect's handler context has the
// headers but not the socket.

export interface Peer {
  address: string | undefined;
  certificate: PeerCertificate | undefined;
  /** The call's response: it emits "close" when the call has ended (answered, or its connection gone). */
  response: EventEmitter | undefined;
}

export const peerKey = createContextKey<Peer>({ address: undefined, certificate: undefined, response: undefined }, { description: "connection peer" });

export function peerContext(req: NodeRequest, res: EventEmitter): ContextValues {
  // HTTP/2 compat requests expose the session's socket only through their stream.
  const socket = "stream" in req ? req.stream.session?.socket : req.socket;
  const certificate = socket instanceof TLSSocket && socket.authorized ? socket.getPeerCertificate() : undefined;
  return createContextValues().set(peerKey, {
    address: socket?.remoteAddress,
    certificate: certificate && certificate.raw ? certificate : undefined,
    response: res,
  });
}
