package release

import (
	"encoding/base64"
	"encoding/json"
	"strings"
)

// decodeJWTClaims decodes a JWT's payload into v, unverified.
func decodeJWTClaims(token string, v any) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return false
	}
	return json.Unmarshal(raw, v) == nil
}
