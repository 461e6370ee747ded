package upload

import (
	"bytes"
	"context"
	"errors"
	"os"
	"runtime"
	"time"
	"testing"
)

// FuzzExtract feeds arbitrary uploads to Extract. Seeds are in
// testdata/fuzz/FuzzExtract: valid projects (gzip and plain), links, and
// uploads that must be refused.
func FuzzExtract(f *testing.F) {
	lim := Limits{MaxCompressedBytes: 1 << 20, MaxUncompressedBytes: 4 << 20, MaxEntries: 500, MaxPathLength: 512}
	f.Fuzz(func(t *testing.T, upload []byte) {
		parent, dir := target(t)
		tm := time.AfterFunc(3*time.Second, func() {
			os.WriteFile("/tmp/hang-input", upload, 0o644)
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			os.WriteFile("/tmp/hang-stack", buf[:n], 0o644)
		})
		defer tm.Stop()
		_, err := Extract(context.Background(), bytes.NewReader(upload), dir, lim)
		checkContained(t, parent, dir)
		if err != nil {
			// The upload is in memory: any failure is the upload's fault.
			if ue := (*Error)(nil); !errors.As(err, &ue) {
				t.Fatalf("Extract = %v (%T), want an *Error", err, err)
			}
			checkEmptyDir(t, dir)
		}
	})
}
