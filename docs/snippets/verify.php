<?php
// HAPP Custom Messenger: verify the requests HAPP POSTs to your endpoint, and
// sign the messages you POST to its webhook. PHP 7.4+, no extension beyond
// the bundled hash and json.
//
// Verify the body's exact bytes, before decoding them; each check returns the
// decoded reply once it is authentic, and throws HappInvalidSignature (answer
// 401) otherwise. Headers: getallheaders(), $_SERVER, or a framework's
// $request->headers->all():
//
//   $body = file_get_contents('php://input');
//   $reply = happ_verify_standard_webhook($body, getallheaders(), [$secret]);
//   $reply = happ_verify_signature($body, getallheaders(), [$secret]); // or this one
//
// During a secret rotation pass both secrets: either may match.

declare(strict_types=1);

// Each attempt is signed as it is sent, so a genuine request is seconds old;
// anything further from now, either way, is a replay.
const HAPP_TOLERANCE_S = 300;

class HappInvalidSignature extends RuntimeException
{
}

// X-HAPP-Signature for a message you POST to /webhook/{channel_id}: the key is
// the whole secret string, whsec_ included.
function happ_sign_request(string $secret, string $body): string
{
    return 'sha256=' . hash_hmac('sha256', $body, $secret);
}

// X-HAPP-Signature: sha256=<hex HMAC-SHA256 of the body, keyed as in happ_sign_request>.
function happ_verify_signature(string $body, array $headers, array $secrets): array
{
    $given = trim(happ_header($headers, 'X-HAPP-Signature'));
    $expected = array_map(function (string $secret) use ($body): string {
        return happ_sign_request($secret, $body);
    }, $secrets);
    if (!happ_any_match($expected, [$given])) {
        throw new HappInvalidSignature('X-HAPP-Signature does not match');
    }
    $reply = happ_decode($body);
    // This signature covers the body alone: only the body's timestamp is
    // authentic, not the X-HAPP-Timestamp header.
    happ_check_timestamp($reply['timestamp'] ?? null);
    return $reply;
}

// webhook-signature: one "v1,<base64 HMAC-SHA256>" per secret HAPP signs with,
// space separated, over "{webhook-id}.{webhook-timestamp}.{body}", keyed with
// the base64-decoded part of whsec_...
function happ_verify_standard_webhook(string $body, array $headers, array $secrets): array
{
    $id = happ_header($headers, 'webhook-id');
    $timestamp = happ_header($headers, 'webhook-timestamp');
    $signed = $id . '.' . $timestamp . '.' . $body;
    $expected = [];
    foreach ($secrets as $secret) {
        $key = base64_decode(preg_replace('/^whsec_/', '', $secret), true);
        if ($key === false) {
            throw new InvalidArgumentException('the secret is not whsec_<base64>');
        }
        $expected[] = base64_encode(hash_hmac('sha256', $signed, $key, true));
    }
    $given = [];
    $entries = preg_split('/\s+/', happ_header($headers, 'webhook-signature'), -1, PREG_SPLIT_NO_EMPTY);
    foreach ($entries as $entry) {
        if (strncmp($entry, 'v1,', 3) === 0) {
            $given[] = substr($entry, 3);
        }
    }
    if (!happ_any_match($expected, $given)) {
        throw new HappInvalidSignature('webhook-signature does not match');
    }
    happ_check_timestamp(preg_match('/\A[0-9]+\z/', $timestamp) === 1 ? (int) $timestamp : null);
    return happ_decode($body);
}

// Every pair is compared, in constant time (hash_equals), so timing tells
// nothing about which secret or signature came close.
function happ_any_match(array $expected, array $given): bool
{
    $found = false;
    foreach ($expected as $e) {
        foreach ($given as $g) {
            $found = hash_equals($e, $g) || $found;
        }
    }
    return $found;
}

function happ_check_timestamp($timestamp): void
{
    if (!is_int($timestamp)) {
        throw new HappInvalidSignature('the request has no timestamp');
    }
    if (abs(time() - $timestamp) > HAPP_TOLERANCE_S) {
        throw new HappInvalidSignature("timestamp $timestamp is more than " . HAPP_TOLERANCE_S . ' s from now');
    }
}

function happ_header(array $headers, string $name): string
{
    // $_SERVER spells X-HAPP-Signature as HTTP_X_HAPP_SIGNATURE.
    $server = 'HTTP_' . strtoupper(str_replace('-', '_', $name));
    foreach ($headers as $key => $value) {
        if (strcasecmp((string) $key, $name) === 0 || $key === $server) {
            // Symfony and Laravel give each header as a list of values.
            return is_array($value) ? (string) reset($value) : (string) $value;
        }
    }
    throw new HappInvalidSignature("no $name header");
}

function happ_decode(string $body): array
{
    $reply = json_decode($body, true);
    if (!is_array($reply)) {
        throw new HappInvalidSignature('the body is not a JSON object');
    }
    return $reply;
}
