// Package paging is how every list RPC pages: page_size defaults and caps, and page tokens that are the
// canonical base64url spelling of the last key of the previous page, refused unless they lie under the
// listed prefix (a token cannot move a listing outside what the RPC lists).
package paging

import (
	"encoding/base64"
	"strings"

	"github.com/warden-sec/warden/services/internal/apierr"
)

// maxTokenLen bounds what a client can make the server decode.
const maxTokenLen = 1024

// Size returns the page size for a request's page_size: def when 0, at most limit.
func Size(n int32, def, limit int) (int, error) {
	switch {
	case n < 0:
		return 0, apierr.InvalidArg("page_size", "must not be negative")
	case n == 0:
		return def, nil
	default:
		return min(int(n), limit), nil
	}
}

// Token is the next_page_token after a page whose last key is lastKey.
func Token(lastKey string) string { return base64.RawURLEncoding.EncodeToString([]byte(lastKey)) }

// After returns the key a page_token stands for ("" for the first page). The key must lie strictly
// under prefix, and the token must be the one spelling Token produces (the decoder would otherwise
// accept line breaks and other variants of the same key).
func After(tok, prefix string) (string, error) {
	if tok == "" {
		return "", nil
	}
	bad := apierr.InvalidArg("page_token", "is not a token from next_page_token of this list")
	if len(tok) > maxTokenLen {
		return "", bad
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	key := string(b)
	if err != nil || Token(key) != tok || !strings.HasPrefix(key, prefix) || len(key) == len(prefix) {
		return "", bad
	}
	return key, nil
}
