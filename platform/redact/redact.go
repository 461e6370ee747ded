// Package redact keeps secrets out of logs and messages, the builder's one
// way to do it: a slog handler option that masks attributes whose names say
// they are secret, and Values, which scrubs known secret values out of free
// text (error messages, answers echoed by an API). Both write Mask.
package redact

import (
	"log/slog"
	"strings"
)

// Mask replaces a secret.
const Mask = "[REDACTED]"

var secretKeys = []string{"token", "authorization", "password", "secret", "apikey", "api_key", "registry_auth"}

// IsSecretKey reports whether an attribute or field name names a secret.
func IsSecretKey(key string) bool {
	k := strings.ToLower(key)
	for _, s := range secretKeys {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// ReplaceAttr is a slog.HandlerOptions.ReplaceAttr that masks secret attributes.
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	if IsSecretKey(a.Key) && a.Value.Kind() != slog.KindGroup {
		return slog.String(a.Key, Mask)
	}
	return a
}

// Values returns s with every secret value in secrets replaced by Mask
// (empty values are ignored): text an API or a daemon echoed back cannot
// leak a token that way.
func Values(s string, secrets ...string) string {
	for _, v := range secrets {
		if v != "" && strings.Contains(s, v) {
			s = strings.ReplaceAll(s, v, Mask)
		}
	}
	return s
}
