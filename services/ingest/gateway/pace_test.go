package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
)

// fakeIngest accepts every spec, reads the upload and records, for every
// stream, what came after the spec.
type fakeIngest struct {
	ingestv1.UnimplementedIngestServiceServer
	ended chan streamRecord // one per stream, when it ends
}

type streamRecord struct {
	chunks   int    // chunk messages after the spec
	upload   []byte // their bytes
	complete bool   // the upload was read to its end (a build would start)
}

func (f *fakeIngest) Build(stream grpc.BidiStreamingServer[ingestv1.BuildRequest, ingestv1.BuildResponse]) error {
	var rec streamRecord
	defer func() { f.ended <- rec }()
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
		rec.chunks++
		got.Write(msg.GetChunk())
		rec.upload = got.Bytes()
	}
	rec.complete = true
	return stream.Send(&ingestv1.BuildResponse{Msg: &ingestv1.BuildResponse_Started{Started: &ingestv1.Started{ReleaseId: 7}}})
}

// record waits for the stream to end (it ends when the gateway cancels it).
func (f *fakeIngest) record(t *testing.T) streamRecord {
	t.Helper()
	select {
	case r := <-f.ended:
		return r
	case <-time.After(time.Minute): // a hang guard, not a measure
		t.Fatal("the Build stream never ended")
		return streamRecord{}
	}
}

// gatewayRig serves BuildHandler with lim in front of a fake ingest.
func gatewayRig(t *testing.T, lim UploadLimits) (*httptest.Server, *fakeIngest) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	fake := &fakeIngest{ended: make(chan streamRecord, 8)}
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
	plain := bytes.Repeat([]byte("a tar, in spirit "), 100000)
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
		{"a fast body passes tight limits", UploadLimits{MinRate: 1 << 10, RateWindow: 200 * time.Millisecond},
			func(<-chan struct{}) io.Reader { return bytes.NewReader(plain) }, "", 200, "", true},
		{"a gzip body with its header passes", UploadLimits{}, func(<-chan struct{}) io.Reader { return bytes.NewReader(gzipped(t, plain)) }, "gzip", 200, "", true},
		{"x-gzip is gzip too", UploadLimits{}, func(<-chan struct{}) io.Reader { return bytes.NewReader(gzipped(t, plain)) }, "x-gzip", 200, "", true},
		{"a trickle is cut off", UploadLimits{MinRate: 1 << 10, RateWindow: 200 * time.Millisecond},
			func(done <-chan struct{}) io.Reader { return &trickle{first: []byte("0123456789"), done: done} }, "", 408,
			"upload too slow: 10 bytes in the last 200ms, the minimum is 1 KiB/s (OBB_UPLOAD_MIN_RATE)", false},
		{"silence is cut off", UploadLimits{MinRate: 1 << 10, RateWindow: 200 * time.Millisecond},
			func(done <-chan struct{}) io.Reader { return &trickle{done: done} }, "", 408,
			"upload too slow: 0 bytes in the last 200ms, the minimum is 1 KiB/s (OBB_UPLOAD_MIN_RATE)", false},
		{"silence after a gzip header is cut off", UploadLimits{MinRate: 1 << 10, RateWindow: 200 * time.Millisecond},
			func(done <-chan struct{}) io.Reader { return &trickle{done: done} }, "gzip", 408, "OBB_UPLOAD_MIN_RATE", false},
		{"an upload longer than the timeout is cut off", UploadLimits{Timeout: 300 * time.Millisecond, MinRate: 1, RateWindow: time.Hour},
			func(done <-chan struct{}) io.Reader { return &trickle{first: []byte("x"), done: done} }, "", 408, "upload took longer than 300ms (OBB_UPLOAD_TIMEOUT)", false},
		{"gzip that is not gzip", UploadLimits{}, func(<-chan struct{}) io.Reader { return bytes.NewReader(plain) }, "gzip", 400,
			"the body says Content-Encoding: gzip but is not gzip", false},
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
			if tt.code == http.StatusUnsupportedMediaType {
				return // refused before a Build stream was opened
			}
			rec := fake.record(t)
			if rec.complete != tt.complete {
				t.Errorf("upload read to its end: %v, want %v", rec.complete, tt.complete)
			}
			switch {
			case tt.complete:
				want := plain
				if strings.Contains(tt.encoding, "gzip") {
					want = gzipped(t, plain)
				}
				if !bytes.Equal(rec.upload, want) {
					t.Errorf("ingest got %d bytes, not the body's %d", len(rec.upload), len(want))
				}
			case tt.code == http.StatusBadRequest:
				if rec.chunks != 0 {
					t.Errorf("ingest got %d chunks after the spec, want none", rec.chunks)
				}
			}
		})
	}
}

// slowReader hands out 100 bytes a Read, pausing first.
type slowReader struct {
	left  int
	pause time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	time.Sleep(s.pause)
	n := min(len(p), 100, s.left)
	s.left -= n
	return n, nil
}

// The rate is the client's: time the gateway spends between Reads (held
// back by ingest) does not count against it; time waiting in Read does.
func TestPaceCountsTheClientsTime(t *testing.T) {
	lim := UploadLimits{MinRate: 1 << 20, RateWindow: 50 * time.Millisecond}
	rc := http.NewResponseController(httptest.NewRecorder()) // no read deadline: Reads here never block
	drain := func(r io.Reader, between time.Duration) error {
		p := pace(r, rc, lim)
		defer p.close()
		buf := make([]byte, 100)
		for {
			_, err := p.Read(buf)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			time.Sleep(between)
		}
	}
	t.Run("a gateway held back between Reads", func(t *testing.T) {
		if err := drain(bytes.NewReader(make([]byte, 500)), 3*lim.RateWindow); err != nil {
			t.Fatalf("the upload failed: %v", err)
		}
	})
	t.Run("a slow client", func(t *testing.T) {
		err := drain(&slowReader{left: 500, pause: 3 * lim.RateWindow}, 0)
		var slow *errPace
		if !errors.As(err, &slow) || !strings.Contains(err.Error(), "upload too slow") {
			t.Fatalf("err = %v, want too slow", err)
		}
		if st := status.Convert(err); st.Code() != codes.DeadlineExceeded {
			t.Errorf("code %v, want DeadlineExceeded", st.Code())
		}
	})
}

func TestPaceMessages(t *testing.T) {
	for d, want := range map[time.Duration]string{time.Hour: "1h", 30 * time.Second: "30s", 90 * time.Minute: "1h30m", 200 * time.Millisecond: "200ms", 2 * time.Minute: "2m"} {
		if got := duration(d); got != want {
			t.Errorf("duration(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[int64]string{16 << 10: "16 KiB/s", 1 << 20: "1 MiB/s", 1000: "1000 bytes/s", 1536: "1536 bytes/s"} {
		if got := rate(n); got != want {
			t.Errorf("rate(%d) = %q, want %q", n, got, want)
		}
	}
}
