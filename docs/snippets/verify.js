'use strict';
// HAPP Custom Messenger: verify the requests HAPP POSTs to your endpoint, and
// sign the messages you POST to its webhook. Node.js 16+, builtin crypto only.
// CommonJS; in an ES module, import crypto and export the functions instead.
//
// Verify the body's exact bytes, before parsing them (Express: express.raw({type:
// 'application/json'}) on this route, then req.body is a Buffer); each check
// returns the parsed reply once it is authentic, and throws InvalidSignature
// (answer 401) otherwise:
//
//   const reply = verifyStandardWebhook(req.body, req.headers, [SECRET]);
//   const reply = verifyHappSignature(req.body, req.headers, [SECRET]); // or this one
//
// During a secret rotation pass both secrets: either may match.

const crypto = require('node:crypto');

// Each attempt is signed as it is sent, so a genuine request is seconds old;
// anything further from now, either way, is a replay.
const TOLERANCE_S = 5 * 60;

class InvalidSignature extends Error {}

// X-HAPP-Signature for a message you POST to /webhook/{channel_id}: the key is
// the whole secret string, whsec_ included, as UTF-8.
function signRequest(secret, body) {
  return 'sha256=' + crypto.createHmac('sha256', secret).update(body).digest('hex');
}

// X-HAPP-Signature: sha256=<hex HMAC-SHA256 of the body, keyed as in signRequest>.
function verifyHappSignature(body, headers, secrets) {
  const given = header(headers, 'X-HAPP-Signature').trim();
  if (!anyMatch(secrets.map((s) => signRequest(s, body)), [given])) {
    throw new InvalidSignature('X-HAPP-Signature does not match');
  }
  const reply = parse(body);
  // This signature covers the body alone: only the body's timestamp is
  // authentic, not the X-HAPP-Timestamp header.
  checkTimestamp(reply.timestamp);
  return reply;
}

// webhook-signature: one "v1,<base64 HMAC-SHA256>" per secret HAPP signs with,
// space separated, over "{webhook-id}.{webhook-timestamp}.{body}", keyed with
// the base64-decoded part of whsec_...
function verifyStandardWebhook(body, headers, secrets) {
  const id = header(headers, 'webhook-id');
  const timestamp = header(headers, 'webhook-timestamp');
  const signed = Buffer.concat([Buffer.from(`${id}.${timestamp}.`), Buffer.from(body)]);
  const expected = secrets.map((s) =>
    crypto.createHmac('sha256', key(s)).update(signed).digest('base64'),
  );
  const given = header(headers, 'webhook-signature')
    .split(/\s+/)
    .filter((entry) => entry.startsWith('v1,'))
    .map((entry) => entry.slice(3));
  if (!anyMatch(expected, given)) {
    throw new InvalidSignature('webhook-signature does not match');
  }
  checkTimestamp(/^[0-9]+$/.test(timestamp) ? Number(timestamp) : null);
  return parse(body);
}

function key(secret) {
  const encoded = secret.replace(/^whsec_/, '');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) throw new Error('the secret is not whsec_<base64>');
  return Buffer.from(encoded, 'base64');
}

// Every pair is compared, in constant time, so timing tells nothing about
// which secret or signature came close.
function anyMatch(expected, given) {
  let found = false;
  for (const e of expected) {
    for (const g of given) {
      const a = Buffer.from(e);
      const b = Buffer.from(g);
      // timingSafeEqual throws on different lengths; a length is no secret.
      found = (a.length === b.length && crypto.timingSafeEqual(a, b)) || found;
    }
  }
  return found;
}

function checkTimestamp(timestamp) {
  if (!Number.isSafeInteger(timestamp)) throw new InvalidSignature('the request has no timestamp');
  if (Math.abs(Date.now() / 1000 - timestamp) > TOLERANCE_S) {
    throw new InvalidSignature(`timestamp ${timestamp} is more than ${TOLERANCE_S} s from now`);
  }
}

// Node's req.headers (lower-case names), a fetch Headers object, or any object.
function header(headers, name) {
  let value = typeof headers.get === 'function' ? headers.get(name) : headers[name.toLowerCase()];
  if (value === undefined || value === null) {
    const found = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase());
    value = found === undefined ? undefined : headers[found];
  }
  if (typeof value !== 'string') throw new InvalidSignature(`no ${name} header`);
  return value;
}

function parse(body) {
  const reply = JSON.parse(Buffer.from(body).toString('utf8'));
  if (reply === null || typeof reply !== 'object' || Array.isArray(reply)) {
    throw new InvalidSignature('the body is not a JSON object');
  }
  return reply;
}

module.exports = { signRequest, verifyHappSignature, verifyStandardWebhook, InvalidSignature };

if (require.main === module) {
  // Check a request you saved, or sign a body, from the command line:
  //   HAPP_SECRET=whsec_... node verify.js standard|happ body.json headers.json
  //   HAPP_SECRET=whsec_... node verify.js sign body.json
  // headers.json is {"webhook-id": "...", ...}; separate several secrets with commas.
  const fs = require('node:fs');
  const keys = process.env.HAPP_SECRET.split(',');
  const [command, bodyFile, headersFile] = process.argv.slice(2);
  const raw = fs.readFileSync(bodyFile);
  if (command === 'sign') {
    console.log(signRequest(keys[0], raw));
  } else {
    const verify = { happ: verifyHappSignature, standard: verifyStandardWebhook }[command];
    try {
      const reply = verify(raw, JSON.parse(fs.readFileSync(headersFile, 'utf8')), keys);
      console.log('ok', reply.message_id);
    } catch (err) {
      if (!(err instanceof InvalidSignature)) throw err;
      console.error(`rejected: ${err.message}`);
      process.exitCode = 1;
    }
  }
}
