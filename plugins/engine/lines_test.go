package engine

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	controlapi "github.com/moby/buildkit/api/services/control"

	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
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

// A step that prints 8 MiB without a newline (in one message, or in many)
// yields one line of 64 KiB and the marker, through both builders' output.
func TestOutputCutsALineWithoutNewline(t *testing.T) {
	huge := strings.Repeat("x", 8<<20)
	marker := " … [line cut: longer than 64 KiB]"
	chunk := strings.Repeat("x", 32<<10)
	var many strings.Builder
	for range 256 {
		fmt.Fprintf(&many, `{"stream":%q}`+"\n", chunk)
	}
	for name, stream := range map[string]string{
		"one message":   fmt.Sprintf(`{"stream":%q}`, huge+"\nafter\n") + "\n",
		"many messages": many.String() + `{"stream":"\nafter\n"}` + "\n",
	} {
		t.Run("classic/"+name, func(t *testing.T) {
			var logs []*pluginv1.Log
			out := &buildOutput{logs: func(l *pluginv1.Log) error { logs = append(logs, l); return nil }}
			if err := feed(t, stream, out.handle); err != nil {
				t.Fatal(err)
			}
			if err := out.flush(); err != nil {
				t.Fatal(err)
			}
			checkCut(t, logs, "", marker)
		})
	}
	t.Run("buildkit/step output", func(t *testing.T) {
		var stream strings.Builder
		stream.WriteString(trace(t, &controlapi.StatusResponse{Vertexes: []*controlapi.Vertex{{Digest: "sha256:v", Name: "[1/1] RUN yes", Started: ts(0)}}}))
		for range 256 {
			stream.WriteString(trace(t, &controlapi.StatusResponse{Logs: []*controlapi.VertexLog{{Vertex: "sha256:v", Stream: 1, Msg: []byte(chunk), Timestamp: ts(time.Second)}}}))
		}
		stream.WriteString(trace(t, &controlapi.StatusResponse{Logs: []*controlapi.VertexLog{{Vertex: "sha256:v", Stream: 1, Msg: []byte("\nafter\n"), Timestamp: ts(2 * time.Second)}}}))
		logs, _, err := runBuildKitStream(t, stream.String())
		if err != nil {
			t.Fatal(err)
		}
		checkCut(t, logs, "#1 1.000 ", marker)
	})
}

func checkCut(t *testing.T, logs []*pluginv1.Log, prefix, marker string) {
	t.Helper()
	var cut, after int
	for _, l := range logs {
		text := l.GetText()
		if len(text) > maxLineBytes+len(prefix)+len(marker) {
			t.Errorf("a line of %d bytes", len(text))
		}
		if strings.HasSuffix(text, marker) {
			cut++
			if want := prefix + strings.Repeat("x", maxLineBytes) + marker; text != want {
				t.Errorf("cut line %.60q…(%d bytes), want %d bytes of x and the marker", text, len(text), maxLineBytes)
			}
		}
		if strings.HasSuffix(text, "after") {
			after++
		}
		if strings.Trim(strings.TrimPrefix(text, prefix), "x") == "" && !strings.HasSuffix(text, marker) && text != "" {
			t.Errorf("the rest of the cut line was given out: %d bytes", len(text))
		}
	}
	if cut != 1 || after != 1 {
		t.Errorf("%d cut lines and %d lines after it, want 1 and 1", cut, after)
	}
}
