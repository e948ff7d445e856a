import { describe, expect, it } from 'vitest';
import { Channel } from '../../src/gen/otp/v1/otp_pb.js';
import { domainToASCII } from 'node:url';
import { asciiDomain, DestinationDigester, maskEmail, parseDestination, type Destination, type DestinationRules } from '../../src/otp/destination.js';

// Canonical destinations (src/otp/destination.ts): every spelling of one
// mailbox or one phone number is one destination for limits, locks, digests
// and lookups, while the notifier still delivers to the address as given.

const off: DestinationRules = { emailProviderRules: false };
const on: DestinationRules = { emailProviderRules: true };

function parsed(channel: Channel, raw: string, rules = off): Destination {
  const d = parseDestination(channel, raw, rules);
  if (typeof d === 'string') throw new Error(`refused ${JSON.stringify(raw)}: ${d}`);
  return d;
}
const email = (raw: string, rules = off) => parsed(Channel.EMAIL, raw, rules);
const phone = (raw: string) => parsed(Channel.SMS, raw);
const refused = (channel: Channel, raw: string, rules = off) => typeof parseDestination(channel, raw, rules) === 'string';

describe('email addresses', () => {
  it('letter case of the local part and the domain does not make another destination', () => {
    const spellings = ['jane@example.com', 'Jane@Example.COM', 'JANE@EXAMPLE.COM', '  jAnE@eXaMpLe.CoM  '];
    expect(new Set(spellings.map((s) => email(s).canonical))).toEqual(new Set(['jane@example.com']));
  });

  it('delivers to the local part as typed, the domain lower-cased in A-labels', () => {
    expect(email('Jane.Doe@Example.COM').address).toBe('Jane.Doe@example.com');
    expect(email('Jane@Bücher.DE').address).toBe('Jane@xn--bcher-kva.de');
  });

  it('an internationalised domain and its punycode (any case, full-width letters) are one destination', () => {
    const forms = ['jane@bücher.de', 'jane@BÜCHER.de', 'jane@xn--bcher-kva.de', 'jane@XN--BCHER-KVA.DE', 'jane@ｂüｃｈｅｒ.de'];
    expect(new Set(forms.map((s) => email(s).canonical))).toEqual(new Set(['jane@xn--bcher-kva.de']));
    expect(email('a@例え.テスト').canonical).toBe('a@xn--r8jz45g.xn--zckzah');
  });

  it('an A-label that is no encoding of a Unicode label is refused: no mail reaches that domain (probe 71)', () => {
    for (const bad of ['jane.doe@xn--bcher-kva.xn--de-', 'jane@xn--de-.com', 'jane@xn--abc.com', 'jane@a.xn--.de', 'jane@xn--zz.de']) expect(refused(Channel.EMAIL, bad), bad).toBe(true);
    // Real ones still pass, in either spelling.
    expect(email('jane@xn--bcher-kva.xn--zckzah').canonical).toBe('jane@xn--bcher-kva.xn--zckzah');
    expect(email('jane@XN--BCHER-KVA.de').canonical).toBe('jane@xn--bcher-kva.de');
  });

  it('dots and +tags are distinct mailboxes by default, folded for known providers only when OTP_EMAIL_PROVIDER_RULES=on', () => {
    expect(email('j.a.n.e+promo@gmail.com').canonical).toBe('j.a.n.e+promo@gmail.com');
    expect(email('J.A.N.E+promo@GoogleMail.com', on).canonical).toBe('jane@gmail.com');
    expect(email('jane@gmail.com', on).canonical).toBe('jane@gmail.com');
    expect(email('Jane+x@outlook.com', on).canonical).toBe('jane@outlook.com');
    expect(email('j.ane+x@outlook.com', on).canonical).toBe('j.ane@outlook.com');
    expect(email('jane+x@me.com', on).canonical).toBe('jane@icloud.com');
    // Proton's short and Swiss domains are the same mailbox; Microsoft's country domains take +tags.
    expect(email('jane+x@pm.me', on).canonical).toBe('jane@proton.me');
    expect(email('jane@protonmail.ch', on).canonical).toBe('jane@proton.me');
    expect(email('jane+x@hotmail.co.uk', on).canonical).toBe('jane@hotmail.co.uk');
    expect(email('jane+x@outlook.de', on).canonical).toBe('jane@outlook.de');
    expect(email('jane+x@live.com.au', on).canonical).toBe('jane@live.com.au');
    // Not a Microsoft domain, though it looks like one.
    expect(email('jane+x@outlook.example.com', on).canonical).toBe('jane+x@outlook.example.com');
    // Unknown domains: "+" and dots may be part of the mailbox name.
    expect(email('jane+x@example.com', on).canonical).toBe('jane+x@example.com');
    // Delivery is still to what was typed.
    expect(email('J.A.N.E+promo@gmail.com', on).address).toBe('J.A.N.E+promo@gmail.com');
  });

  it('refuses invisible and control characters anywhere, instead of deleting them (UTS 46 would)', () => {
    for (const bad of [
      'jane\u0000@example.com', 'ja\u200bne@example.com', 'jane@exa\u00admple.com', 'jane@exa\u200dmple.com',
      '\u202ejane@example.com', 'jane@example.com\u2066', '\ufeffjane@example.com', 'jane\r\n@example.com',
      'jane@example.com\r\nBcc: x@y.z', 'jane\t@example.com', 'jane@example.com\u0000',
    ]) {
      expect(refused(Channel.EMAIL, bad), JSON.stringify(bad)).toBe(true);
    }
  });

  it('refuses what is not a plain address', () => {
    for (const bad of [
      'jane', '@example.com', 'jane@', 'jane@localhost', 'jane@1.2.3.4', 'jane@[1.2.3.4]', '"jane doe"@example.com',
      'jane@example.com.', 'jane@-example.com', 'jane@exa mple.com', 'jäne@example.com', 'a'.repeat(65) + '@example.com',
      '.jane@example.com', 'jane.@example.com', 'ja..ne@example.com', 'jane@example..com', 'jane<x>@example.com',
    ]) {
      expect(refused(Channel.EMAIL, bad), JSON.stringify(bad)).toBe(true);
    }
  });

  it('masks by whole characters: never half a surrogate pair or grapheme', () => {
    expect(email('Jane@Example.com').masked).toBe('j***@example.com');
    expect(maskEmail('😀x@example.com')).toBe('😀***@example.com');
    expect(maskEmail('👩‍👩‍👧x@example.com')).toBe('👩‍👩‍👧***@example.com');
    expect(maskEmail('e\u0301x@example.com')).toBe('e\u0301***@example.com');
    expect(maskEmail('j@example.com')).toBe('j***@example.com');
    expect(maskEmail('\r\nx@example.com')).toBe('\r\n***@example.com');
  });

  it('takes the short way only where it gives what the grapheme segmenter and UTS 46 give', () => {
    const segmenter = new Intl.Segmenter('und', { granularity: 'grapheme' });
    const slowMask = (a: string) => {
      const at = a.lastIndexOf('@');
      return (segmenter.segment(a.slice(0, at)).containing(0)?.segment ?? '') + '***' + a.slice(at);
    };
    for (const a of ['jane@example.com', 'j@x.io', 'ab@c.de', 'e\u0301x@example.com', '\r\nx@e.com', '😀x@e.com', 'a\u200db@e.com', '@e.com']) {
      expect(maskEmail(a), JSON.stringify(a)).toBe(slowMask(a));
    }
    for (const d of [
      'example.com', 'Example.COM', 'EXAMPLE.com', 'a-b.example.co.uk', 'xn--bcher-kva.de', 'XN--BCHER-KVA.DE', 'xn--zz.de', 'a.xn--bcher-kva.de',
      'bücher.de', 'Bücher.DE', '1.2.3.4', '0x7f.1', 'example.com.', '-x.com', 'a--b.com', 'ab--c.com', 'x.123', 'x.0x7f', 'a.b.0XFF', '08.09', 'a.b', 'ſ.com', 'K.com', 'ß.de', '',
    ]) {
      expect(asciiDomain(d), JSON.stringify(d)).toBe(domainToASCII(d));
    }
  });
});

describe('phone numbers', () => {
  const E164 = '+12025550123';
  it('every accepted format of one number is one E.164 destination', () => {
    const formats = [
      '+12025550123', '+1 202 555 0123', '+1-202-555-0123', '+1 (202) 555-0123', '+1.202.555.0123', ' +1 202-555-0123 ',
      '+1\u00a0202\u00a0555\u00a00123', '＋１２０２５５５０１２３', '+１ (２０２) ５５５-０１２３',
    ];
    for (const f of formats) {
      const d = phone(f);
      expect(d.canonical, JSON.stringify(f)).toBe(E164);
      expect(d.address).toBe(E164);
    }
    expect(phone('+44 (0) 20 7946 0958').canonical).toBe('+442079460958');
    expect(phone('+442079460958').masked).toBe('+4*********58');
  });

  it('refuses national forms, the 00 prefix, extensions, letters and invisible characters (never another destination)', () => {
    for (const bad of [
      '2025550123', '(202) 555-0123', '0012025550123', '011 1 202 555 0123', '+1 202 555 0123 ext. 5', '+1-202-555-0123;ext=5',
      '+1 202 555 0123#', '+1 202 555 0123\u0000', '+1202\u200b5550123', '+1 202 555 01234 x', 'tel:+12025550123', '+1 800 FLOWERS',
    ]) {
      expect(refused(Channel.SMS, bad), JSON.stringify(bad)).toBe(true);
    }
  });
});

describe('digests', () => {
  it('one digest per canonical destination and tenant', () => {
    const digester = new DestinationDigester(Buffer.alloc(32, 7));
    const a = digester.digest('acme', email('Jane@Example.COM').canonical);
    expect(digester.digest('acme', email('jane@example.com').canonical)).toBe(a);
    expect(digester.digest('globex', email('jane@example.com').canonical)).not.toBe(a);
  });
});
