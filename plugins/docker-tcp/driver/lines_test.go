package driver

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestLineBufferBoundsALineWithoutNewline(t *testing.T) {
	big := strings.Repeat("y", maxLineBytes+10)
	marker := " … [line cut: longer than 64 KiB]"
	tests := []struct {
		name   string
		chunks []string
		want   []string
		rest   string
	}{
		{"lines across chunks", []string{"a\nb", "c\n", "d"}, []string{"a", "bc"}, "d"},
		{"a long line in one chunk is cut", []string{big + "\nnext\n"}, []string{big[:maxLineBytes] + marker, "next"}, ""},
		{"a line that never ends is cut once, the rest dropped", []string{big, big, big, "tail\nafter\n"}, []string{big[:maxLineBytes] + marker, "after"}, ""},
		{"held back: at most the limit", []string{strings.Repeat("z", maxLineBytes)}, nil, strings.Repeat("z", maxLineBytes)},
		{"cut at a character boundary", []string{strings.Repeat("a", maxLineBytes-1) + "€€\n"}, []string{strings.Repeat("a", maxLineBytes-1) + marker}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b lineBuffer
			var got []string
			for _, c := range tt.chunks {
				got = append(got, b.add(c)...)
				if len(b.partial) > maxLineBytes {
					t.Fatalf("holding %d bytes", len(b.partial))
				}
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("lines: %d %.80q…, want %d %.80q…", len(got), got, len(tt.want), tt.want)
			}
			for _, l := range got {
				if !utf8.ValidString(l) {
					t.Errorf("invalid UTF-8 in %.40q", l)
				}
			}
			if r := b.rest(); r != tt.rest {
				t.Errorf("rest %.40q, want %.40q", r, tt.rest)
			}
		})
	}
}
