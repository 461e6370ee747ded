package engine

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	controlapi "github.com/moby/buildkit/api/services/control"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func ts(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(t0.Add(d)) }

// trace is one moby.buildkit.trace message as the daemon sends it: aux is
// a JSON string holding the protobuf StatusResponse (base64).
func trace(t *testing.T, st *controlapi.StatusResponse) string {
	t.Helper()
	raw, err := proto.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	aux, err := json.Marshal(raw) // []byte → base64 JSON string
	if err != nil {
		t.Fatal(err)
	}
	return `{"id":"moby.buildkit.trace","aux":` + string(aux) + "}\n"
}

func runBuildKitStream(t *testing.T, stream string) ([]*pluginv1.Log, *buildkitOutput, error) {
	t.Helper()
	var logs []*pluginv1.Log
	out := newBuildKitOutput(func(l *pluginv1.Log) error { logs = append(logs, l); return nil })
	err := feed(t, stream, out.handle)
	if err == nil {
		err = out.flush()
	}
	return logs, out, err
}

func texts(logs []*pluginv1.Log) string {
	var b strings.Builder
	for _, l := range logs {
		if l.GetError() {
			b.WriteString("E ")
		}
		b.WriteString(l.GetText())
		b.WriteByte('\n')
	}
	return b.String()
}

func TestBuildKitOutputPlainProgress(t *testing.T) {
	const ctxDgst, fromDgst, runDgst = "sha256:c0", "sha256:f0", "sha256:r0"
	stream := trace(t, &controlapi.StatusResponse{Vertexes: []*controlapi.Vertex{
		{Digest: ctxDgst, Name: "[internal] load build context", Started: ts(0)},
	}}) + trace(t, &controlapi.StatusResponse{
		Vertexes: []*controlapi.Vertex{
			{Digest: ctxDgst, Name: "[internal] load build context", Started: ts(0), Completed: ts(40 * time.Millisecond)},
			{Digest: fromDgst, Name: "[1/2] FROM docker.io/library/busybox", Cached: true, Started: ts(0), Completed: ts(0)},
		},
		Statuses: []*controlapi.VertexStatus{
			{ID: "transferring context:", Vertex: ctxDgst, Current: 98, Started: ts(0)},
			{ID: "transferring context:", Vertex: ctxDgst, Current: 98, Started: ts(0), Completed: ts(30 * time.Millisecond)},
		},
	}) + trace(t, &controlapi.StatusResponse{Vertexes: []*controlapi.Vertex{
		{Digest: runDgst, Name: "[2/2] RUN echo hi", Started: ts(time.Second)},
	}}) + trace(t, &controlapi.StatusResponse{Logs: []*controlapi.VertexLog{
		{Vertex: runDgst, Stream: 1, Msg: []byte("hel"), Timestamp: ts(1123 * time.Millisecond)},
		{Vertex: runDgst, Stream: 2, Msg: []byte("warning: x\n"), Timestamp: ts(1200 * time.Millisecond)},
		{Vertex: runDgst, Stream: 1, Msg: []byte("lo\nwor"), Timestamp: ts(1300 * time.Millisecond)},
		{Vertex: runDgst, Stream: 1, Msg: []byte("ld\r\n\n10%\r50%\r100%\nno newline"), Timestamp: ts(1500 * time.Millisecond)},
	}}) + trace(t, &controlapi.StatusResponse{Vertexes: []*controlapi.Vertex{
		{Digest: runDgst, Name: "[2/2] RUN echo hi", Started: ts(time.Second), Completed: ts(1234 * time.Millisecond)},
		{Digest: fromDgst, Name: "[1/2] FROM docker.io/library/busybox", Cached: true, Started: ts(0), Completed: ts(0)},
	}}) + `{"id":"moby.image.id","aux":{"ID":"sha256:abcd"}}` + "\n"

	logs, out, err := runBuildKitStream(t, stream)
	if err != nil {
		t.Fatal(err)
	}
	want := `#1 [internal] load build context
#2 [1/2] FROM docker.io/library/busybox
#1 transferring context: 98B done
#1 DONE 0.0s
#2 CACHED
#3 [2/2] RUN echo hi
#3 0.200 warning: x
#3 0.123 hello
#3 0.300 world
#3 0.500 100%
#3 0.500 no newline
#3 DONE 0.2s
`
	if got := texts(logs); got != want {
		t.Fatalf("lines:\n%s\nwant:\n%s", got, want)
	}
	if id, err := out.image(); id != "sha256:abcd" || err != nil {
		t.Fatalf("image = %q, %v", id, err)
	}
}

func TestBuildKitOutputFailure(t *testing.T) {
	const runDgst = "sha256:r0"
	const msg = "executor failed running [/bin/sh -c exit 3]: exit code: 3"
	stream := trace(t, &controlapi.StatusResponse{Vertexes: []*controlapi.Vertex{
		{Digest: runDgst, Name: "[2/2] RUN exit 3", Started: ts(0)},
	}}) + trace(t, &controlapi.StatusResponse{Logs: []*controlapi.VertexLog{
		{Vertex: runDgst, Stream: 2, Msg: []byte("oops"), Timestamp: ts(10 * time.Millisecond)},
	}}) + trace(t, &controlapi.StatusResponse{Vertexes: []*controlapi.Vertex{
		{Digest: runDgst, Name: "[2/2] RUN exit 3", Started: ts(0), Completed: ts(50 * time.Millisecond), Error: msg},
	}}) + `{"errorDetail":{"message":"` + msg + `"},"error":"` + msg + `"}` + "\n"

	logs, _, err := runBuildKitStream(t, stream)
	var failed *buildFailedError
	if !errors.As(err, &failed) {
		t.Fatalf("err = %v, want a buildFailedError", err)
	}
	if !strings.Contains(err.Error(), "exit code: 3") || !strings.Contains(err.Error(), "exit 3") || !strings.Contains(err.Error(), `"[2/2] RUN exit 3"`) {
		t.Errorf("err = %q, want the step, the command and the exit code", err)
	}
	want := "#1 [2/2] RUN exit 3\n#1 0.010 oops\nE #1 ERROR: " + msg + "\nE " + msg + "\n"
	if got := texts(logs); got != want {
		t.Fatalf("lines:\n%s\nwant:\n%s", got, want)
	}
}

func TestBuildKitOutputCanceledAndUnreadable(t *testing.T) {
	stream := trace(t, &controlapi.StatusResponse{Vertexes: []*controlapi.Vertex{
		{Digest: "sha256:r0", Name: "[2/2] RUN sleep 600", Started: ts(0), Completed: ts(time.Second), Error: "failed to run: context canceled"},
	}}) + `{"id":"moby.buildkit.trace","aux":"bm90IHByb3Rv"}` + "\n" + // "not proto"
		`{"id":"moby.buildkit.trace","aux":42}` + "\n"
	logs, out, err := runBuildKitStream(t, stream)
	if err != nil {
		t.Fatal(err)
	}
	got := texts(logs)
	if !strings.HasPrefix(got, "#1 [2/2] RUN sleep 600\n#1 CANCELED\n(BuildKit progress not readable: ") || strings.Count(got, "not readable") != 1 {
		t.Fatalf("lines:\n%s", got)
	}
	if _, err := out.image(); err == nil {
		t.Fatal("image() without moby.image.id: no error")
	}
}

func TestBuildOptionsBuilderAndNetwork(t *testing.T) {
	spec := &pluginv1.BuildSpec{JobId: "j", ImageRef: "r/v2/x", Host: &pluginv1.HostConfig{NetworkMode: "none"}}
	if o := buildOptions(spec, nil); o.Version != build.BuilderV1 || o.NetworkMode != "none" || o.Tags[0] != "r/v2/x:latest" {
		t.Errorf("classic options: version %q network %q tags %v", o.Version, o.NetworkMode, o.Tags)
	}
	spec.Host.Buildkit, spec.Host.NetworkMode = true, "host"
	if o := buildOptions(spec, nil); o.Version != build.BuilderBuildKit || o.NetworkMode != "host" {
		t.Errorf("BuildKit options: version %q network %q", o.Version, o.NetworkMode)
	}
	if a, b := buildID("j"), buildID("j"); a == b || !strings.HasPrefix(a, "obb-j-") {
		t.Errorf("build ids %q, %q: want distinct obb-j-<random>", a, b)
	}
}

func TestBuildKitCapable(t *testing.T) {
	for _, tt := range []struct {
		os, api string
		want    bool
	}{
		{"linux", "1.41", true}, {"linux", "1.39", true}, {"linux", "1.38", false},
		{"windows", "1.41", false}, {"linux", "", false},
	} {
		if got := buildKitCapable(tt.os, tt.api); got != tt.want {
			t.Errorf("buildKitCapable(%q, %q) = %v, want %v", tt.os, tt.api, got, tt.want)
		}
	}
}

func TestValidateSpecNetworkMode(t *testing.T) {
	for m, ok := range map[string]bool{"": true, "none": true, "host": true, "default": true, "build-net_1.a": true,
		"-x": false, "a b": false, "container:abc": false} {
		spec := &pluginv1.BuildSpec{JobId: "j", ImageRef: "127.0.0.1:5000/v2/abc", Host: &pluginv1.HostConfig{Endpoint: "unix:///x", NetworkMode: m}}
		err := validateSpec(spec)
		if ok && err != nil || !ok && !errors.Is(err, sdk.ErrInvalidArgument) {
			t.Errorf("network_mode %q: %v (valid %v)", m, err, ok)
		}
	}
}
