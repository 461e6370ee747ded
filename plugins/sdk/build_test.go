package sdk_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-balena-builder/builder/plugins/sdk"
	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

func collect(logs *[]*pluginv1.Log) sdk.LogSink {
	return func(l *pluginv1.Log) error {
		*logs = append(*logs, l)
		return nil
	}
}

func TestBuildStreamsContextInOrder(t *testing.T) {
	data := make([]byte, 5*sdk.ChunkSize+12345)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)

	exec := sdktest.Serve(t, &sdktest.FakeExecutor{
		BuildF: func(ctx context.Context, spec *pluginv1.BuildSpec, r io.Reader, logs sdk.LogSink) (*pluginv1.Result, error) {
			h := sha256.New()
			n, err := io.Copy(h, r)
			if err != nil {
				return nil, err
			}
			return &pluginv1.Result{ImageId: spec.GetJobId(), Digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), Size: n}, nil
		},
	})
	res, err := exec.Build(context.Background(), &pluginv1.BuildSpec{JobId: "j1"}, bytes.NewReader(data), collect(new([]*pluginv1.Log)))
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if res.GetDigest() != "sha256:"+hex.EncodeToString(want[:]) || res.GetSize() != int64(len(data)) || res.GetImageId() != "j1" {
		t.Fatalf("result %v, want digest of %d bytes", res, len(data))
	}
}

func TestBuildPassesSpecUnchanged(t *testing.T) {
	spec := &pluginv1.BuildSpec{
		JobId: "j2", Host: &pluginv1.HostConfig{Name: "h", Endpoint: "tcp://x:2376", TlsCa: "/ca"},
		Platform: "linux/arm64/v8", Nocache: true, Dockerfile: "sub/Dockerfile",
		BuildArgs: map[string]string{"A": "1", "EMPTY": ""}, Labels: map[string]string{"io.balena": "x"},
		ImageRef: "127.0.0.1:5000/v2/abc", RegistryToken: "secret",
	}
	var got *pluginv1.BuildSpec
	exec := sdktest.Serve(t, &sdktest.FakeExecutor{
		BuildF: func(_ context.Context, s *pluginv1.BuildSpec, r io.Reader, _ sdk.LogSink) (*pluginv1.Result, error) {
			got = s
			_, err := io.Copy(io.Discard, r)
			return &pluginv1.Result{}, err
		},
	})
	if _, err := exec.Build(context.Background(), spec, strings.NewReader(""), collect(new([]*pluginv1.Log))); err != nil {
		t.Fatalf("Build: %v", err)
	}
	if !proto.Equal(got, spec) {
		t.Fatalf("plugin got spec %v, want %v", got, spec)
	}
}

func TestBuildLogsArriveInOrderBeforeResult(t *testing.T) {
	const n = 2000
	exec := sdktest.Serve(t, &sdktest.FakeExecutor{
		BuildF: func(_ context.Context, _ *pluginv1.BuildSpec, _ io.Reader, logs sdk.LogSink) (*pluginv1.Result, error) {
			for i := range n {
				if err := logs(&pluginv1.Log{Text: fmt.Sprintf("line %d", i), Replace: i%2 == 1, Error: i == n-1}); err != nil {
					return nil, err
				}
			}
			return &pluginv1.Result{Digest: "sha256:x"}, nil
		},
	})
	var logs []*pluginv1.Log
	res, err := exec.Build(context.Background(), &pluginv1.BuildSpec{}, strings.NewReader("ctx"), collect(&logs))
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if res.GetDigest() != "sha256:x" {
		t.Fatalf("result %v", res)
	}
	if len(logs) != n {
		t.Fatalf("got %d log lines, want %d", len(logs), n)
	}
	for i, l := range logs {
		if l.GetText() != fmt.Sprintf("line %d", i) || l.GetReplace() != (i%2 == 1) || l.GetError() != (i == n-1) {
			t.Fatalf("log %d = %v", i, l)
		}
	}
}

func TestBuildLogsStreamWhileBuilding(t *testing.T) {
	release := make(chan struct{})
	exec := sdktest.Serve(t, &sdktest.FakeExecutor{
		BuildF: func(ctx context.Context, _ *pluginv1.BuildSpec, _ io.Reader, logs sdk.LogSink) (*pluginv1.Result, error) {
			if err := logs(&pluginv1.Log{Text: "first"}); err != nil {
				return nil, err
			}
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return &pluginv1.Result{}, nil
		},
	})
	got := make(chan string, 1)
	_, err := exec.Build(context.Background(), &pluginv1.BuildSpec{}, strings.NewReader(""), func(l *pluginv1.Log) error {
		got <- l.GetText()
		close(release) // only reachable if "first" arrived before the result
		return nil
	})
	if err != nil || <-got != "first" {
		t.Fatalf("Build: %v", err)
	}
}

func TestBuildCancelPropagatesToPlugin(t *testing.T) {
	started := make(chan struct{})
	pluginErr := make(chan error, 1)
	exec := sdktest.Serve(t, &sdktest.FakeExecutor{
		BuildF: func(ctx context.Context, _ *pluginv1.BuildSpec, _ io.Reader, _ sdk.LogSink) (*pluginv1.Result, error) {
			close(started)
			select {
			case <-ctx.Done():
				pluginErr <- ctx.Err()
				return nil, fmt.Errorf("build stopped: %w", ctx.Err())
			case <-time.After(30 * time.Second):
				pluginErr <- nil
				return &pluginv1.Result{}, nil
			}
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	t0 := time.Now()
	_, err := exec.Build(ctx, &pluginv1.BuildSpec{}, strings.NewReader(""), collect(new([]*pluginv1.Log)))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Build error = %v, want context.Canceled", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("Build returned after %s", d)
	}
	select {
	case perr := <-pluginErr:
		if !errors.Is(perr, context.Canceled) {
			t.Fatalf("plugin ctx error = %v, want context.Canceled", perr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("plugin's ctx was not cancelled")
	}
}

func TestBuildLogSinkErrorAbortsBuild(t *testing.T) {
	pluginDone := make(chan error, 1)
	exec := sdktest.Serve(t, &sdktest.FakeExecutor{
		BuildF: func(ctx context.Context, _ *pluginv1.BuildSpec, _ io.Reader, logs sdk.LogSink) (*pluginv1.Result, error) {
			for i := 0; ; i++ {
				if err := logs(&pluginv1.Log{Text: fmt.Sprint(i)}); err != nil {
					pluginDone <- err
					return nil, err
				}
				if ctx.Err() != nil {
					pluginDone <- ctx.Err()
					return nil, ctx.Err()
				}
				time.Sleep(time.Millisecond)
			}
		},
	})
	sinkErr := errors.New("disk full")
	var n int
	_, err := exec.Build(context.Background(), &pluginv1.BuildSpec{}, strings.NewReader(""), func(*pluginv1.Log) error {
		if n++; n == 3 {
			return sinkErr
		}
		return nil
	})
	if !errors.Is(err, sinkErr) {
		t.Fatalf("Build error = %v, want the sink's error", err)
	}
	select {
	case <-pluginDone:
	case <-time.After(5 * time.Second):
		t.Fatal("plugin kept building after the sink failed")
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("upload interrupted")
	}
	n := min(len(p), r.n)
	r.n -= n
	return n, nil
}

func TestBuildContextReadErrorFailsBuild(t *testing.T) {
	exec := sdktest.Serve(t, &sdktest.FakeExecutor{})
	_, err := exec.Build(context.Background(), &pluginv1.BuildSpec{}, &failingReader{n: 3 * sdk.ChunkSize / 2}, collect(new([]*pluginv1.Log)))
	if err == nil || !strings.Contains(err.Error(), "upload interrupted") {
		t.Fatalf("Build error = %v, want the reader's error", err)
	}
}

func TestBuildReturningEarlyDoesNotHang(t *testing.T) {
	exec := sdktest.Serve(t, &sdktest.FakeExecutor{
		BuildF: func(context.Context, *pluginv1.BuildSpec, io.Reader, sdk.LogSink) (*pluginv1.Result, error) {
			return nil, fmt.Errorf("buildkit: %w", sdk.ErrUnimplemented)
		},
	})
	big := io.LimitReader(zeros{}, 64*sdk.ChunkSize)
	_, err := exec.Build(context.Background(), &pluginv1.BuildSpec{}, big, collect(new([]*pluginv1.Log)))
	if !errors.Is(err, sdk.ErrUnimplemented) || err.Error() != "buildkit: not implemented" {
		t.Fatalf("Build error = %v", err)
	}
	// A result without reading the context at all also works.
	exec = sdktest.Serve(t, &sdktest.FakeExecutor{
		BuildF: func(context.Context, *pluginv1.BuildSpec, io.Reader, sdk.LogSink) (*pluginv1.Result, error) {
			return &pluginv1.Result{ImageId: "sha256:1"}, nil
		},
	})
	res, err := exec.Build(context.Background(), &pluginv1.BuildSpec{}, io.LimitReader(zeros{}, 64*sdk.ChunkSize), collect(new([]*pluginv1.Log)))
	if err != nil || res.GetImageId() != "sha256:1" {
		t.Fatalf("Build = %v, %v", res, err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
