package upload

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzExtract feeds arbitrary uploads to Extract. Seeds are in
// testdata/fuzz/FuzzExtract: valid projects (gzip and plain), links, and
// uploads that must be refused.
func FuzzExtract(f *testing.F) {
	lim := Limits{MaxCompressedBytes: 1 << 20, MaxUncompressedBytes: 4 << 20, MaxEntries: 500, MaxPathLength: 512}
	// One directory for all inputs, emptied after each, on a memory file
	// system if there is one: system calls are most of the cost of an input.
	base, dir := target(f)
	if shm, err := os.MkdirTemp("/dev/shm", "upload-fuzz-"); err == nil {
		f.Cleanup(func() { os.RemoveAll(shm) })
		base, dir = shm, filepath.Join(shm, "outer", "project")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, upload []byte) {
		_, err := Extract(context.Background(), bytes.NewReader(upload), dir, lim)
		checkContained(t, base, dir)
		if err != nil {
			// The upload is in memory: any failure is the upload's fault.
			if ue := (*Error)(nil); !errors.As(err, &ue) {
				t.Fatalf("Extract = %v (%T), want an *Error", err, err)
			}
			checkEmptyDir(t, dir)
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	})
}
