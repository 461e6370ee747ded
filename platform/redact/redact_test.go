package redact

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestReplaceAttrMasksSecretKeys(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: ReplaceAttr}))
	log.Info("x", "user_token", "s3cr3t-value", "Authorization", "Bearer abc", "fleet", "org/app")
	out := buf.String()
	for _, leak := range []string{"s3cr3t-value", "Bearer abc"} {
		if strings.Contains(out, leak) {
			t.Errorf("log leaks %q: %s", leak, out)
		}
	}
	if !strings.Contains(out, "org/app") {
		t.Errorf("log lost an ordinary attribute: %s", out)
	}
}

func TestSecretsScrub(t *testing.T) {
	var s Secrets
	s.Add("abcdefgh12345678", "short")
	tests := []struct{ in, want string }{
		{"token abcdefgh12345678 here", "token [REDACTED] here"},
		{"nothing secret", "nothing secret"},
		{"short stays", "short stays"},
	}
	for _, tt := range tests {
		if got := s.Scrub(tt.in); got != tt.want {
			t.Errorf("Scrub(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	s.Remove("abcdefgh12345678")
	if got := s.Scrub("abcdefgh12345678"); got != "abcdefgh12345678" {
		t.Errorf("removed secret still scrubbed: %q", got)
	}
}
