// Entry point of `otp-relay`: the Node version is checked before the program
// (and everything it imports) is loaded, so an old Node gets one clear line.
import { requireNode } from "./node-version.js";

requireNode("otp-relay");
await import("../relay-main.js");
