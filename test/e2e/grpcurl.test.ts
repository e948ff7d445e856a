// What an operator does with grpcurl, with no proto files: everything it
// knows comes from server reflection.
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GRPCURL, grpcurl } from '../support/cli.js';
import { freshEmail, startTestApp, wrongCode, type TestApp } from '../support/otp-app.js';

let app: TestApp;

beforeAll(async () => {
  if (!existsSync(GRPCURL)) throw new Error(`grpcurl not found at ${GRPCURL} (set GRPCURL_BIN)`);
  app = await startTestApp();
});

afterAll(async () => {
  await app?.stop();
});

describe('grpcurl against the gRPC port', () => {
  it('lists the services', async () => {
    const out = await grpcurl([], app.grpcTarget, 'list');
    expect(out.code).toBe(0);
    expect(out.stdout.split('\n')).toEqual(expect.arrayContaining(['otp.v1.OtpService', 'grpc.health.v1.Health']));
  });

  it('describes otp.v1.OtpService with all its methods', async () => {
    const out = await grpcurl([], app.grpcTarget, 'describe', 'otp.v1.OtpService');
    expect(out.code).toBe(0);
    for (const rpc of ['Send', 'Verify', 'Resend', 'CheckRateLimit', 'GetVerification', 'CancelVerification']) expect(out.stdout).toContain(`rpc ${rpc} (`);
  });

  it('describes a request message, validation options and all', async () => {
    const out = await grpcurl([], app.grpcTarget, 'describe', 'otp.v1.VerifyRequest');
    expect(out.code).toBe(0);
    expect(out.stdout).toContain('string code = 3');
  });

  it('sends with -d JSON; a wrong code is VERIFY_RESULT_INVALID_CODE, the delivered one VERIFIED', async () => {
    const send = await grpcurl(
      ['-d', JSON.stringify({ purpose: 'login', channel: 'CHANNEL_EMAIL', destination: freshEmail('ops') })],
      app.grpcTarget,
      'otp.v1.OtpService/Send',
    );
    expect(send.code).toBe(0);
    const sent = JSON.parse(send.stdout) as { verificationId: string; codeLength: number; maskedDestination: string };
    expect(sent.verificationId).not.toBe('');
    expect(sent.maskedDestination).toMatch(/^o\*+@example\.com$/);

    const verify = await grpcurl(
      ['-d', JSON.stringify({ verificationId: sent.verificationId, code: wrongCode(sent.codeLength) })],
      app.grpcTarget,
      'otp.v1.OtpService/Verify',
    );
    expect(verify.code).toBe(0);
    expect(JSON.parse(verify.stdout)).toMatchObject({ result: 'VERIFY_RESULT_INVALID_CODE', attemptsRemaining: 4 });

    // The round trip an operator makes: the code from the dev delivery log, typed into grpcurl.
    const code = await app.deliveries.codeFor(sent.verificationId);
    const right = await grpcurl(
      ['-d', JSON.stringify({ verification_id: sent.verificationId, code })],
      app.grpcTarget,
      'otp.v1.OtpService/Verify',
    );
    expect(right.code).toBe(0);
    expect(JSON.parse(right.stdout)).toMatchObject({ result: 'VERIFY_RESULT_VERIFIED', verificationId: sent.verificationId });
  });

  it('shows INVALID_ARGUMENT with the BadRequest details for bad input', async () => {
    const out = await grpcurl(
      ['-d', JSON.stringify({ purpose: 'login', channel: 'CHANNEL_SMS', destination: 'not-a-phone@example.com' })],
      app.grpcTarget,
      'otp.v1.OtpService/Send',
    );
    expect(out.code).not.toBe(0);
    expect(out.stderr).toContain('Code: InvalidArgument');
    expect(out.stderr).toContain('google.rpc.BadRequest');
    expect(out.stderr).toContain('"field": "destination"');
  });

  it("without reflection, with the README's proto flags, the error details are decoded too (probe 33)", async () => {
    const flags = ['-import-path', 'proto', '-import-path', 'third_party/proto', '-proto', 'otp/v1/otp.proto', '-proto', 'google/rpc/error_details.proto'];
    expect(readFileSync('README.md', 'utf8')).toContain('-proto google/rpc/error_details.proto');
    const out = await grpcurl(
      ['-use-reflection=false', ...flags, '-d', JSON.stringify({ purpose: 'login', channel: 'CHANNEL_SMS', destination: 'not-a-phone@example.com' })],
      app.grpcTarget,
      'otp.v1.OtpService/Send',
    );
    expect(out.stderr).toContain('Code: InvalidArgument');
    expect(out.stderr).toContain('"field": "destination"');
    expect(out.stderr).not.toContain('is not recognized');
  });

  it('checks health: SERVING', async () => {
    const all = await grpcurl([], app.grpcTarget, 'grpc.health.v1.Health/Check');
    expect(all.code).toBe(0);
    expect(JSON.parse(all.stdout)).toEqual({ status: 'SERVING' });
    const otp = await grpcurl(['-d', '{"service":"otp.v1.OtpService"}'], app.grpcTarget, 'grpc.health.v1.Health/Check');
    expect(JSON.parse(otp.stdout)).toEqual({ status: 'SERVING' });
  });
});
