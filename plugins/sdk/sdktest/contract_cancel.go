package sdktest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// testCancel starts a build that sleeps, waits until the sleep runs, stops it
// (by cancelling ctx, or with Cancel(job id) when byJob) and checks that
// Build returns promptly with a Canceled error, no container is left and
// (with env.HostProcesses) the sleep no longer runs.
func testCancel(t *testing.T, exec sdk.Executor, env Env, byJob bool) {
	// A unique sleep length marks this build's container and processes;
	// "started-<job>" is put together by the shell (from a shell variable,
	// which BuildKit does not expand in the step's name), so it is seen only
	// once the RUN runs.
	sleep := fmt.Sprintf("sleep %d", 600+time.Now().UnixNano()%1000)
	dockerfile := fmt.Sprintf("FROM %s\nARG JOB\nRUN s=started; echo \"$s-$JOB\" && %s\n", env.BaseImage, sleep)
	spec := newSpec(t, env, nil)
	spec.BuildArgs = map[string]string{"JOB": spec.GetJobId()}
	spec.Nocache = true
	rec := &LogRecorder{}
	started := rec.Seen("started-" + spec.GetJobId())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type outcome struct {
		res *pluginv1.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := exec.Build(ctx, spec, bytes.NewReader(ContextTar(t, map[string]string{"Dockerfile": dockerfile})), rec.Sink())
		done <- outcome{res, err}
	}()

	select {
	case <-started:
	case o := <-done:
		t.Fatalf("Build ended before the RUN started: %v, %v\nlogs:\n%s", o.res, o.err, rec)
	case <-time.After(buildTimeout):
		t.Fatalf("the RUN did not start within %s; logs:\n%s", buildTimeout, rec)
	}
	if !env.Host.GetBuildkit() {
		// The classic builder runs each RUN in a container of the daemon.
		if n := len(containersWith(t, env, sleep)); n == 0 {
			t.Errorf("no container runs %q while the build sleeps", sleep)
		}
	}
	if env.HostProcesses != nil {
		if !waitProcesses(t, env, sleep, true, cancelTimeout) {
			t.Errorf("no process on the build host runs %q while the build sleeps", sleep)
		}
	} else if env.Host.GetBuildkit() {
		t.Logf("env.HostProcesses is not set: not checking that the BuildKit RUN process stops")
	}

	t0 := time.Now()
	if byJob {
		if err := exec.(sdk.Canceller).Cancel(context.Background(), spec.GetJobId()); err != nil {
			t.Fatalf("Cancel(%s): %v", spec.GetJobId(), err)
		}
	} else {
		cancel()
	}
	var o outcome
	select {
	case o = <-done:
	case <-time.After(cancelTimeout):
		t.Fatalf("Build still running %s after the cancel", cancelTimeout)
	}
	t.Logf("Build returned %s after the cancel: %v", time.Since(t0).Round(time.Millisecond), o.err)
	if !errors.Is(o.err, context.Canceled) {
		t.Errorf("Build after cancel = %v, %v; want an error wrapping context.Canceled", o.res, o.err)
	}
	if left := containersWith(t, env, sleep); len(left) > 0 {
		t.Errorf("containers left after the cancel: %+v", left)
	}
	if env.HostProcesses != nil && !waitProcesses(t, env, sleep, false, cancelTimeout) {
		t.Errorf("%q still runs on the build host %s after the cancel: %q", sleep, cancelTimeout, env.HostProcesses(t, sleep))
	}
}

// waitProcesses waits up to timeout until processes with marker run on the
// build host (running) or none does (!running), and tells whether that
// happened. Processes start and die a little after the logs say so.
func waitProcesses(t *testing.T, env Env, marker string, running bool, timeout time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if (len(env.HostProcesses(t, marker)) > 0) == running {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}
