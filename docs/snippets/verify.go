// Package happwebhook verifies the requests HAPP Custom Messenger POSTs to
// your endpoint, and signs the messages you POST to its webhook. Go 1.18+,
// standard library only.
//
// Verify the body's exact bytes, before decoding them; each check returns the
// decoded reply once it is authentic, and an error wrapping ErrInvalid (answer
// 401) otherwise:
//
//	body, err := io.ReadAll(r.Body)
//	reply, err := happwebhook.VerifyStandardWebhook(body, r.Header, []string{secret})
//	reply, err := happwebhook.VerifyHAPPSignature(body, r.Header, []string{secret}) // or this one
//
// During a secret rotation pass both secrets: either may match.
package happwebhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Tolerance: each attempt is signed as it is sent, so a genuine request is
// seconds old; anything further from now, either way, is a replay.
const Tolerance = 5 * time.Minute

// ErrInvalid is wrapped by every failed check: not from HAPP, or not recent.
var ErrInvalid = errors.New("happ webhook not verified")

type Author struct {
	Type string `json:"type"` // assistant, operator or system
	Name string `json:"name"`
}

type Attachment struct {
	Type     string `json:"type"` // image, file or audio
	URL      string `json:"url"`
	Name     string `json:"name,omitempty"`
	MimeType string `json:"mime_type,omitempty"`
}

// Reply is the body HAPP POSTs (sender_id, reply and channel repeat To, Text
// and a constant, and are left out here).
type Reply struct {
	To          string         `json:"to"`
	Text        string         `json:"text"`
	ChannelID   string         `json:"channel_id"`
	Metadata    map[string]any `json:"metadata"`
	MessageID   string         `json:"message_id"`
	InReplyTo   *string        `json:"in_reply_to"`
	Timestamp   int64          `json:"timestamp"`
	Author      Author         `json:"author"`
	Event       string         `json:"event,omitempty"` // handoff, operator_joined, hand_back, closed, typing
	Attachments []Attachment   `json:"attachments,omitempty"`
	Test        bool           `json:"test,omitempty"`
}

// SignRequest is the X-HAPP-Signature of a message you POST to
// /webhook/{channel_id}: the key is the whole secret string, whsec_ included.
func SignRequest(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// VerifyHAPPSignature checks X-HAPP-Signature: sha256=<hex HMAC-SHA256 of the
// body, keyed as in SignRequest>.
func VerifyHAPPSignature(body []byte, header http.Header, secrets []string) (*Reply, error) {
	given := []byte(strings.TrimSpace(header.Get("X-HAPP-Signature")))
	if len(given) == 0 {
		return nil, fmt.Errorf("%w: no X-HAPP-Signature header", ErrInvalid)
	}
	expected := make([][]byte, 0, len(secrets))
	for _, secret := range secrets {
		expected = append(expected, []byte(SignRequest(secret, body)))
	}
	if !anyMatch(expected, [][]byte{given}) {
		return nil, fmt.Errorf("%w: X-HAPP-Signature does not match", ErrInvalid)
	}
	reply, err := decode(body)
	if err != nil {
		return nil, err
	}
	// This signature covers the body alone: only the body's timestamp is
	// authentic, not the X-HAPP-Timestamp header.
	if err := checkTimestamp(reply.Timestamp); err != nil {
		return nil, err
	}
	return reply, nil
}

// VerifyStandardWebhook checks webhook-signature: one "v1,<base64 HMAC-SHA256>"
// per secret HAPP signs with, space separated, over
// "{webhook-id}.{webhook-timestamp}.{body}", keyed with the base64-decoded part
// of whsec_...
func VerifyStandardWebhook(body []byte, header http.Header, secrets []string) (*Reply, error) {
	id, timestamp, signatures := header.Get("webhook-id"), header.Get("webhook-timestamp"), header.Get("webhook-signature")
	if id == "" || timestamp == "" || signatures == "" {
		return nil, fmt.Errorf("%w: no webhook-id, webhook-timestamp or webhook-signature header", ErrInvalid)
	}
	signed := append([]byte(id+"."+timestamp+"."), body...)
	expected := make([][]byte, 0, len(secrets))
	for _, secret := range secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
		if err != nil {
			return nil, fmt.Errorf("the secret is not whsec_<base64>: %v", err)
		}
		mac := hmac.New(sha256.New, key)
		mac.Write(signed)
		expected = append(expected, []byte(base64.StdEncoding.EncodeToString(mac.Sum(nil))))
	}
	var given [][]byte
	for _, entry := range strings.Fields(signatures) {
		if version, signature, ok := strings.Cut(entry, ","); ok && version == "v1" {
			given = append(given, []byte(signature))
		}
	}
	if !anyMatch(expected, given) {
		return nil, fmt.Errorf("%w: webhook-signature does not match", ErrInvalid)
	}
	seconds, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: webhook-timestamp %q is not a number", ErrInvalid, timestamp)
	}
	if err := checkTimestamp(seconds); err != nil {
		return nil, err
	}
	return decode(body)
}

// anyMatch compares every pair, in constant time (hmac.Equal), so timing tells
// nothing about which secret or signature came close.
func anyMatch(expected, given [][]byte) bool {
	found := false
	for _, e := range expected {
		for _, g := range given {
			found = hmac.Equal(e, g) || found
		}
	}
	return found
}

func checkTimestamp(seconds int64) error {
	age := time.Since(time.Unix(seconds, 0))
	if age > Tolerance || age < -Tolerance {
		return fmt.Errorf("%w: timestamp %d is more than %v from now", ErrInvalid, seconds, Tolerance)
	}
	return nil
}

func decode(body []byte) (*Reply, error) {
	var reply Reply
	if err := json.Unmarshal(body, &reply); err != nil {
		return nil, fmt.Errorf("%w: the body is not a JSON object: %v", ErrInvalid, err)
	}
	return &reply, nil
}
