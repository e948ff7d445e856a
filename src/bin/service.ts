// Entry point of `otp-service`: the Node version is checked before the program
// (and everything it imports) is loaded, so an old Node gets one clear line.
import { requireNode } from "./node-version.js";

requireNode("otp-service");
await import("../main.js");
