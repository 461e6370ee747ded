package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/plugins/sdk"
	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// TestHelperProcess is not a test: it is the plugin binary of the Launch
// tests (go-plugin's helper-process pattern), run through a wrapper script.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("OBB_SDK_HELPER_PROCESS") != "1" {
		return
	}
	logger := sdk.NewLogger(os.Stderr, slog.LevelDebug)
	sdk.Serve(&sdktest.FakeExecutor{
		BuildF: func(ctx context.Context, spec *pluginv1.BuildSpec, r io.Reader, logs sdk.LogSink) (*pluginv1.Result, error) {
			logger.Info("helper building", "job", spec.GetJobId())
			n, err := io.Copy(io.Discard, r)
			if err != nil {
				return nil, err
			}
			if err := logs(&pluginv1.Log{Text: fmt.Sprintf("read %d bytes", n)}); err != nil {
				return nil, err
			}
			if spec.GetJobId() == "crash" {
				os.Exit(3)
			}
			return &pluginv1.Result{Size: n}, nil
		},
	})
	os.Exit(0)
}

// helperPlugin writes an executable that runs this test binary as a plugin.
func helperPlugin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "helper-plugin")
	// TMPDIR: the socket of a crashed plugin stays behind; keep it in dir.
	script := fmt.Sprintf("#!/bin/sh\nOBB_SDK_HELPER_PROCESS=1 TMPDIR=%q exec %q -test.run='^TestHelperProcess$'\n", dir, os.Args[0])
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

type syncBuffer struct {
	mu chanMutex
	b  bytes.Buffer
}

type chanMutex chan struct{}

func (m chanMutex) Lock()   { m <- struct{}{} }
func (m chanMutex) Unlock() { <-m }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLaunchBuildAndCrash(t *testing.T) {
	hostLog := &syncBuffer{mu: make(chanMutex, 1)}
	logger := slog.New(slog.NewTextHandler(hostLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()

	client, err := sdk.Launch(ctx, helperPlugin(t), logger)
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	defer client.Kill()
	if client.Version != sdk.APIVersion {
		t.Fatalf("negotiated version %d", client.Version)
	}

	var logs []*pluginv1.Log
	res, err := client.Executor.Build(ctx, &pluginv1.BuildSpec{JobId: "ok"}, strings.NewReader("hello"), collect(&logs))
	if err != nil || res.GetSize() != 5 || len(logs) != 1 || logs[0].GetText() != "read 5 bytes" {
		t.Fatalf("Build = %v, %v, logs %v", res, err, logs)
	}

	// The plugin exits in the middle of a build: an error, not a panic.
	_, err = client.Executor.Build(ctx, &pluginv1.BuildSpec{JobId: "crash"}, strings.NewReader("x"), collect(new([]*pluginv1.Log)))
	if err == nil {
		t.Fatal("Build on a crashing plugin succeeded")
	}
	t.Logf("crash error: %v", err)
	deadline := time.Now().Add(10 * time.Second)
	for !client.Exited() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !client.Exited() {
		t.Fatal("plugin process did not exit")
	}
	if _, err := client.Executor.Info(ctx); err == nil {
		t.Fatal("Info on a dead plugin succeeded")
	} else if !errors.Is(err, sdk.ErrUnavailable) {
		t.Logf("Info on a dead plugin: %v", err)
	}

	// The plugin's slog lines reach the host logger with level and attributes.
	if out := hostLog.String(); !strings.Contains(out, "helper building") || !strings.Contains(out, "job=ok") || !strings.Contains(out, "level=INFO") {
		t.Fatalf("host log lacks the plugin's structured line:\n%s", out)
	}
}

func TestLaunchNotAPlugin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "not-a-plugin")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho hello\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := sdk.Launch(ctx, path, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Launch(not a plugin) = %v", err)
	}
}

func TestLaunchCancelled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slow-plugin")
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexec sleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := sdk.Launch(ctx, path, slog.New(slog.DiscardHandler))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 5*time.Second {
		t.Fatalf("Launch = %v after %s", err, time.Since(t0))
	}
}
