package upload

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// benchUpload builds a gzip-compressed (level 6, as balena-cli) tar of about
// total bytes in files of fileSize: half random data, half text. It returns
// the upload and the length of the tar.
func benchUpload(b *testing.B, total, fileSize int) ([]byte, int64) {
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("FROM RUN COPY the build context image layer balena fleet device release service " +
		"func package import return error nil string int main config docker compose yaml json")
	var ents []ent
	for i := 0; i*fileSize < total; i++ {
		body := make([]byte, 0, fileSize)
		if i%2 == 0 {
			for len(body) < fileSize {
				body = binary.LittleEndian.AppendUint64(body, rng.Uint64())
			}
		} else {
			for len(body) < fileSize {
				body = append(body, words[rng.IntN(len(words))]...)
				body = append(body, " \n"[rng.IntN(2)])
			}
		}
		// In walk order, as balena-cli sends them: a directory at a time.
		ents = append(ents, fileMode(fmt.Sprintf("src/pkg%03d/file%05d.dat", i/64, i), string(body[:fileSize]), 0o644))
	}
	t := tarball(b, ents...)
	return gz(b, t), int64(len(t))
}

func BenchmarkExtract(b *testing.B) {
	for _, bc := range []struct {
		name            string
		total, fileSize int
	}{
		{"64MiB-mixed", 64 << 20, 256 << 10},
		{"16MiB-4KiB-files", 16 << 20, 4 << 10},
	} {
		b.Run(bc.name, func(b *testing.B) {
			upload, tarLen := benchUpload(b, bc.total, bc.fileSize)
			base := b.TempDir()
			b.SetBytes(tarLen) // throughput of the project, uncompressed
			for i := 0; b.Loop(); i++ {
				dir := filepath.Join(base, fmt.Sprint(i))
				b.StopTimer()
				if err := os.Mkdir(dir, 0o755); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, err := Extract(context.Background(), bytes.NewReader(upload), dir, Limits{}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.RemoveAll(dir)
				b.StartTimer()
			}
			b.ReportMetric(float64(len(upload))/float64(tarLen), "gz-ratio")
		})
	}
}
