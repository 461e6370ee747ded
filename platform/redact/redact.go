// Package redact keeps secrets out of logs: a slog handler option that masks
// attributes whose names say they are secret, and a Secrets set that scrubs
// known secret values out of free text (build output, error messages).
package redact

import (
	"log/slog"
	"strings"
	"sync"
)

const mask = "[REDACTED]"

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
		return slog.String(a.Key, mask)
	}
	return a
}

// Secrets is a set of secret values to scrub from text. Safe for concurrent use.
type Secrets struct {
	mu     sync.RWMutex
	values map[string]struct{}
}

// Add registers values (empty and very short values are ignored: masking
// them would mangle ordinary text).
func (s *Secrets) Add(values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.values == nil {
		s.values = map[string]struct{}{}
	}
	for _, v := range values {
		if len(v) >= 8 {
			s.values[v] = struct{}{}
		}
	}
}

// Remove forgets values.
func (s *Secrets) Remove(values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range values {
		delete(s.values, v)
	}
}

// Scrub replaces every registered secret in text with a mask.
func (s *Secrets) Scrub(text string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for v := range s.values {
		if strings.Contains(text, v) {
			text = strings.ReplaceAll(text, v, mask)
		}
	}
	return text
}
