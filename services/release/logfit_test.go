package release

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/open-balena-builder/builder/services/release/openbalena"
)

func buildLog(lines, width int, decorate string) string {
	var b strings.Builder
	for i := range lines {
		fmt.Fprintf(&b, "%s step %06d %s\n", decorate, i, strings.Repeat("x", width))
	}
	return b.String()
}

func TestTailLines(t *testing.T) {
	tests := []struct {
		name   string
		log    string
		budget int
	}{
		{"plain", buildLog(20_000, 40, ""), 400_000},
		{"ansi and quotes cost more in JSON", buildLog(20_000, 40, "\x1b[31m\"<&>\"\x1b[0m"), 400_000},
		{"multibyte", buildLog(20_000, 40, "✓ étape"), 100_000},
		{"invalid utf-8", buildLog(20_000, 40, "\xff\xfe"), 100_000},
		{"one huge line", strings.Repeat("y", 700_000), 400_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tailLines(tt.log, tt.budget)
			if n := encodedLen(got); n > tt.budget {
				t.Errorf("encoded %d bytes, budget %d", n, tt.budget)
			}
			if !strings.HasPrefix(got, truncatedMark) {
				t.Fatalf("no %q prefix: %q", truncatedMark, got[:40])
			}
			kept := strings.TrimPrefix(got, truncatedMark)
			if !strings.HasSuffix(tt.log, kept) {
				t.Error("not the tail of the log")
			}
			if strings.Contains(tt.log, "\n") && !strings.HasPrefix(tt.log[len(tt.log)-len(kept)-1:], "\n") {
				t.Error("does not start at a line")
			}
			if encodedLen(got) < tt.budget/2 {
				t.Errorf("kept only %d of a %d budget", encodedLen(got), tt.budget)
			}
		})
	}
	if short := "a\nb\n"; tailLines(short, 100) != short {
		t.Error("a log under the budget must be kept whole")
	}
}

func TestFitImagePatch(t *testing.T) {
	tests := []struct {
		name string
		p    openbalena.ImagePatch
	}{
		{"600 kB log", openbalena.ImagePatch{Status: "success", BuildLog: buildLog(12_000, 40, "")}},
		{"big error and big log", openbalena.ImagePatch{
			Status: "failed", ErrorMessage: strings.Repeat("e", 400_000), BuildLog: buildLog(12_000, 40, "")}},
		{"escaped error, log and dockerfile", openbalena.ImagePatch{
			Status:       "failed",
			ErrorMessage: strings.Repeat("\x01", 300_000),
			BuildLog:     buildLog(12_000, 40, "\x1b[1m"),
			Dockerfile:   strings.Repeat("RUN echo \"<hi>\"\n", 40_000),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fitImagePatch(tt.p, DefaultMaxLogBytes)
			size := got.EncodedSize()
			if size > maxPatchBody {
				t.Errorf("body %d bytes, want <= %d", size, maxPatchBody)
			}
			if len(got.ErrorMessage) > maxErrorMessage {
				t.Errorf("error_message %d bytes", len(got.ErrorMessage))
			}
			if tt.p.BuildLog != "" && got.BuildLog == "" || tt.p.ErrorMessage != "" && got.ErrorMessage == "" ||
				tt.p.Dockerfile != "" && got.Dockerfile == "" {
				t.Error("a whole text was dropped")
			}
			if !utf8.ValidString(got.ErrorMessage) {
				t.Error("error_message cut inside a rune")
			}
			var m map[string]any
			raw, _ := json.Marshal(map[string]string{"build_log": got.BuildLog})
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestTruncateHead(t *testing.T) {
	s := strings.Repeat("é", 10) // 2 bytes each
	if got := truncateHead(s, 5); got != "éé" {
		t.Errorf("truncateHead = %q", got)
	}
}

func TestFairShare(t *testing.T) {
	tests := []struct {
		sizes     []int
		room      int
		wantShare int
		wantOK    bool
	}{
		{[]int{10, 20, 30}, 60, 0, true},
		{[]int{10, 100, 100}, 110, 50, false},
		{[]int{0, 500, 20}, 220, 200, false},
		{[]int{5, 5}, -3, 0, false},
	}
	for _, tt := range tests {
		share, ok := fairShare(tt.sizes, tt.room)
		if share != tt.wantShare || ok != tt.wantOK {
			t.Errorf("fairShare(%v, %d) = %d, %v; want %d, %v", tt.sizes, tt.room, share, ok, tt.wantShare, tt.wantOK)
		}
	}
}
