package metadata

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"

	"github.com/open-balena-builder/builder/platform/redact"
)

// Redaction replaces passwords in what is shown or marshalled.
const Redaction = redact.Mask

func (c RegistryCredential) redacted() RegistryCredential {
	if c.Password != "" {
		c.Password = Redaction
	}
	return c
}

// String summarises the metadata for logs: variable names (not values),
// secret destinations and sizes, registry hosts and usernames, and the
// contract's type and version. It never shows a secret or a password.
func (m *Metadata) String() string {
	if m == nil {
		return "metadata <nil>"
	}
	var b strings.Builder
	b.WriteString("build-variables:")
	n := b.Len()
	writeVars(&b, "global", m.Variables.Global)
	for _, svc := range sortedKeys(m.Variables.Services) {
		writeVars(&b, svc, m.Variables.Services[svc])
	}
	if b.Len() == n {
		b.WriteString(" none")
	}
	b.WriteString("; build-secrets:")
	n = b.Len()
	writeSecrets(&b, "global", m.Secrets.Global)
	for _, svc := range sortedKeys(m.Secrets.Services) {
		writeSecrets(&b, svc, m.Secrets.Services[svc])
	}
	if b.Len() == n {
		b.WriteString(" none")
	}
	b.WriteString("; registry-secrets:")
	if len(m.RegistryAuth) == 0 {
		b.WriteString(" none")
	}
	for i, host := range sortedKeys(m.RegistryAuth) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, " %s (%s)", host, m.RegistryAuth[host])
	}
	b.WriteString("; contract: ")
	if m.Contract == nil {
		b.WriteString("none")
	} else {
		fmt.Fprintf(&b, "%v", m.Contract["type"])
		if m.Semver != "" {
			b.WriteString(" " + m.Semver)
		}
	}
	return b.String()
}

func writeVars(b *strings.Builder, scope string, vars map[string]string) {
	if len(vars) > 0 {
		fmt.Fprintf(b, " %s[%s]", scope, strings.Join(sortedKeys(vars), " "))
	}
}

func writeSecrets(b *strings.Builder, scope string, list []Secret) {
	if len(list) == 0 {
		return
	}
	parts := make([]string, len(list))
	for i, s := range list {
		parts[i] = s.String()
	}
	fmt.Fprintf(b, " %s[%s]", scope, strings.Join(parts, " "))
}

// LogValue makes slog log the summary.
func (m *Metadata) LogValue() slog.Value { return slog.StringValue(m.String()) }

// String shows the destination and size, never the content.
func (s Secret) String() string {
	return fmt.Sprintf("/run/secrets/%s (%d bytes)", s.Dest, len(s.Content))
}

// Format makes every fmt verb (%v, %+v, %#v, %s, %x, %d…) print String.
func (s Secret) Format(f fmt.State, _ rune) { fmt.Fprint(f, s.String()) }

// LogValue makes slog log String.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON keeps the content out of JSON (logs, debug dumps).
func (s Secret) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Dest string `json:"dest"`
		Size int    `json:"size"`
	}{s.Dest, len(s.Content)})
}

// String shows the username, never the password.
func (c RegistryCredential) String() string {
	if c.Password == "" {
		return fmt.Sprintf("user %q, no password", c.Username)
	}
	return fmt.Sprintf("user %q, password %s", c.Username, Redaction)
}

// Format makes every fmt verb print String.
func (c RegistryCredential) Format(f fmt.State, _ rune) { fmt.Fprint(f, c.String()) }

// LogValue makes slog log String.
func (c RegistryCredential) LogValue() slog.Value { return slog.StringValue(c.String()) }

// MarshalJSON keeps the password out of JSON.
func (c RegistryCredential) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Username string `json:"username"`
		Password string `json:"password,omitempty"`
	}{c.Username, c.redacted().Password})
}
