// Entry point of `otp-notifier`: the Node version is checked before the program
// (and everything it imports) is loaded, so an old Node gets one clear line.
import { requireNode } from "./node-version.js";

requireNode("otp-notifier");
await import("../notifier/main.js");
