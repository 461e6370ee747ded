package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
)

// fakeIngest accepts every spec, reads the upload and records it.
type fakeIngest struct {
	ingestv1.UnimplementedIngestServiceServer

	mu       sync.Mutex
	uploads  [][]byte
	complete int // uploads read to their end (a build would start)
}

func (f *fakeIngest) Build(stream grpc.BidiStreamingServer[ingestv1.BuildRequest, ingestv1.BuildResponse]) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	if err := stream.Send(&ingestv1.BuildResponse{Msg: &ingestv1.BuildResponse_Accepted{Accepted: &ingestv1.Accepted{}}}); err != nil {
		return err
	}
	var got bytes.Buffer
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		got.Write(msg.GetChunk())
	}
	// Recorded before the answer: the client sees it once it has the answer.
	f.mu.Lock()
	f.uploads = append(f.uploads, got.Bytes())
	f.complete++
	f.mu.Unlock()
	return stream.Send(&ingestv1.BuildResponse{Msg: &ingestv1.BuildResponse_Started{Started: &ingestv1.Started{ReleaseId: 7}}})
}

func (f *fakeIngest) completed() (int, [][]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.complete, append([][]byte(nil), f.uploads...)
}

// gatewayRig serves BuildHandler with lim in front of a fake ingest.
func gatewayRig(t *testing.T, lim UploadLimits) (*httptest.Server, *fakeIngest) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	fake := &fakeIngest{}
	ingestv1.RegisterIngestServiceServer(srv, fake)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient("passthrough:///bufnet", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	mux := runtime.NewServeMux()
	if err := mux.HandlePath(http.MethodPost, "/v3/build", BuildHandler(ingestv1.NewIngestServiceClient(cc), lim, slog.New(slog.DiscardHandler))); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return hs, fake
}

// trickle sends first, then blocks until the test ends (a silent client).
type trickle struct {
	first []byte
	done  <-chan struct{}
}

func (tr *trickle) Read(p []byte) (int, error) {
	if len(tr.first) > 0 {
		n := copy(p, tr.first)
		tr.first = tr.first[n:]
		return n, nil
	}
	<-tr.done
	return 0, io.EOF
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func TestUploadPaceAndEncoding(t *testing.T) {
	plain := bytes.Repeat([]byte("a tar, in spirit "), 10000)
	tests := []struct {
		name     string
		lim      UploadLimits
		body     func(done <-chan struct{}) io.Reader
		encoding string
		code     int
		msg      string
		complete bool
	}{
		{"a fast body passes unchanged", UploadLimits{}, func(<-chan struct{}) io.Reader { return bytes.NewReader(plain) }, "", 200, "", true},
		{"a gzip body with its header passes", UploadLimits{}, func(<-chan struct{}) io.Reader { return bytes.NewReader(gzipped(t, plain)) }, "gzip", 200, "", true},
		{"a trickle is cut off", UploadLimits{MinRate: 1 << 10, RateWindow: 200 * time.Millisecond},
			func(done <-chan struct{}) io.Reader { return &trickle{first: []byte("0123456789"), done: done} }, "", 408, "too slow: 10 bytes in the last 200ms", false},
		{"silence is cut off", UploadLimits{MinRate: 1 << 10, RateWindow: 200 * time.Millisecond},
			func(done <-chan struct{}) io.Reader { return &trickle{done: done} }, "", 408, "OBB_UPLOAD_MIN_RATE", false},
		{"an upload longer than the timeout is cut off", UploadLimits{Timeout: 300 * time.Millisecond, MinRate: 1, RateWindow: time.Hour},
			func(done <-chan struct{}) io.Reader { return &trickle{first: []byte("x"), done: done} }, "", 408, "longer than 300ms (OBB_UPLOAD_TIMEOUT)", false},
		{"gzip that is not gzip", UploadLimits{}, func(<-chan struct{}) io.Reader { return bytes.NewReader(plain) }, "gzip", 400, "Content-Encoding: gzip but is not gzip", false},
		{"an encoding nobody sends", UploadLimits{}, func(<-chan struct{}) io.Reader { return bytes.NewReader(plain) }, "br", 415, "not supported", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs, fake := gatewayRig(t, tt.lim)
			done := make(chan struct{})
			defer close(done)
			req, _ := http.NewRequest(http.MethodPost, hs.URL+"/v3/build?slug=org/app&headless=true", tt.body(done))
			req.Header.Set("Authorization", "Bearer t")
			if tt.encoding != "" {
				req.Header.Set("Content-Encoding", tt.encoding)
			}
			resp, err := hs.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.code || !strings.Contains(string(body), tt.msg) {
				t.Fatalf("%d %s, want %d %q", resp.StatusCode, body, tt.code, tt.msg)
			}
			n, uploads := fake.completed()
			if (n == 1) != tt.complete {
				t.Errorf("uploads read to their end: %d", n)
			}
			if tt.complete {
				want := plain
				if tt.encoding == "gzip" {
					want = gzipped(t, plain)
				}
				if len(uploads) != 1 || !bytes.Equal(uploads[0], want) {
					t.Errorf("ingest got %d uploads, not the body", len(uploads))
				}
			}
		})
	}
}
