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

func TestValues(t *testing.T) {
	tests := []struct {
		in      string
		secrets []string
		want    string
	}{
		{"token abcdefgh12345678 here, again abcdefgh12345678", []string{"abcdefgh12345678"}, "token [REDACTED] here, again [REDACTED]"},
		{"nothing secret", []string{"abcdefgh12345678"}, "nothing secret"},
		{"Basic YnVpbGRlcjpzM2NyM3Q= and s3cr3t", []string{"s3cr3t", "YnVpbGRlcjpzM2NyM3Q="}, "Basic [REDACTED] and [REDACTED]"},
		{"empty secrets change nothing", []string{"", ""}, "empty secrets change nothing"},
	}
	for _, tt := range tests {
		if got := Values(tt.in, tt.secrets...); got != tt.want {
			t.Errorf("Values(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
