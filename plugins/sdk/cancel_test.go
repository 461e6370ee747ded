package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/plugins/sdk"
	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// slowStopper is a fake whose builds take cleanupTime to stop after their
// ctx is cancelled, like a driver removing the build's containers.
func slowStopper(started chan<- struct{}, cleanupTime time.Duration, cleaned *atomic.Bool) *sdktest.FakeExecutor {
	return &sdktest.FakeExecutor{
		BuildF: func(ctx context.Context, _ *pluginv1.BuildSpec, _ io.Reader, _ sdk.LogSink) (*pluginv1.Result, error) {
			close(started)
			<-ctx.Done()
			time.Sleep(cleanupTime)
			cleaned.Store(true)
			return nil, fmt.Errorf("build stopped: %w", ctx.Err())
		},
	}
}

func TestBuildCancelWaitsForThePluginToStop(t *testing.T) {
	started := make(chan struct{})
	var cleaned atomic.Bool
	exec := sdktest.Serve(t, slowStopper(started, 300*time.Millisecond, &cleaned))

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	_, err := exec.Build(ctx, &pluginv1.BuildSpec{JobId: "j-cancel"}, strings.NewReader(""), collect(new([]*pluginv1.Log)))
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "build stopped") {
		t.Fatalf("Build error = %v, want the plugin's Canceled error", err)
	}
	if !cleaned.Load() {
		t.Fatal("Build returned before the plugin finished stopping the build")
	}
}

func TestBuildCancelWithoutJobIDStillStops(t *testing.T) {
	started := make(chan struct{})
	var cleaned atomic.Bool
	exec := sdktest.Serve(t, slowStopper(started, 0, &cleaned))
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	t0 := time.Now()
	_, err := exec.Build(ctx, &pluginv1.BuildSpec{}, strings.NewReader(""), collect(new([]*pluginv1.Log)))
	if !errors.Is(err, context.Canceled) || time.Since(t0) > 5*time.Second {
		t.Fatalf("Build = %v after %s", err, time.Since(t0))
	}
}

func TestCancelByJobIDReachesTheBuild(t *testing.T) {
	started := make(chan struct{})
	var cleaned atomic.Bool
	// The host's Cancel by job id cancels the Build's ctx in the plugin.
	exec := sdktest.Serve(t, slowStopper(started, 0, &cleaned))
	done := make(chan error, 1)
	go func() {
		_, err := exec.Build(context.Background(), &pluginv1.BuildSpec{JobId: "j7"}, strings.NewReader(""), collect(new([]*pluginv1.Log)))
		done <- err
	}()
	<-started
	canceller := exec.(sdk.Canceller)
	if err := canceller.Cancel(context.Background(), "j7"); err != nil {
		t.Fatalf("Cancel(j7) = %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Build error = %v, want Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Build still running after Cancel")
	}
	if err := canceller.Cancel(context.Background(), "j7"); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("Cancel(finished job) = %v, want ErrNotFound", err)
	}
}
