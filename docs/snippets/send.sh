#!/usr/bin/env bash
# Send the message in a JSON file to a HAPP channel, signed. Needs curl and openssl.
#   HAPP_WEBHOOK_URL=https://happ.example.com/webhook/cm_... HAPP_SECRET=whsec_... ./send.sh message.json
set -euo pipefail
message=$1
# The HMAC covers the file's exact bytes, so curl must send exactly those:
# --data-binary, not -d (which drops newlines).
signature=$(openssl dgst -sha256 -hmac "$HAPP_SECRET" -r <"$message" | cut -d' ' -f1)
curl -sS -X POST "$HAPP_WEBHOOK_URL" \
  -H 'Content-Type: application/json' \
  -H "X-HAPP-Signature: sha256=$signature" \
  --data-binary @"$message" \
  -w '\nHTTP %{http_code}\n'
