package engine

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/docker/docker/pkg/jsonmessage"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

func feed(t *testing.T, stream string, handle func(*jsonmessage.JSONMessage) error) error {
	t.Helper()
	return readMessages(strings.NewReader(stream), handle)
}

func TestBuildOutputLinesAndContainers(t *testing.T) {
	var logs []*pluginv1.Log
	out := &buildOutput{logs: func(l *pluginv1.Log) error { logs = append(logs, l); return nil }}
	stream := `{"stream":"Step 1/2 : FROM busybox\n"}
{"stream":" ---\u003e 3f57d9401f8d\n"}
{"stream":"Step 2/2 : RUN echo hi\n"}
{"stream":"\n"}
{"stream":" ---\u003e Running in 0123456789ab\n"}
{"stream":"hel"}
{"stream":"lo\nwor"}
{"stream":"ld\r\n\n"}
{"aux":{"ID":"sha256:aaaa"}}
{"stream":"Successfully built aaaa00000000\n"}
{"stream":"no newline"}`
	if err := feed(t, stream, out.handle); err != nil {
		t.Fatal(err)
	}
	if err := out.flush(); err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, l := range logs {
		texts = append(texts, l.GetText())
	}
	want := []string{"Step 1/2 : FROM busybox", " ---> 3f57d9401f8d", "Step 2/2 : RUN echo hi", " ---> Running in 0123456789ab", "hello", "world", "Successfully built aaaa00000000", "no newline"}
	if strings.Join(texts, "|") != strings.Join(want, "|") {
		t.Fatalf("lines %q\nwant  %q", texts, want)
	}
	if id, err := out.image(); id != "sha256:aaaa" || err != nil {
		t.Fatalf("image = %q, %v", id, err)
	}
	if len(out.containers) != 1 || out.containers[0] != "0123456789ab" {
		t.Fatalf("containers %v", out.containers)
	}
}

func TestBuildOutputError(t *testing.T) {
	var logs []*pluginv1.Log
	out := &buildOutput{logs: func(l *pluginv1.Log) error { logs = append(logs, l); return nil }}
	stream := `{"stream":"Step 2/2 : RUN exit 3\n"}
{"stream":"partial"}
{"errorDetail":{"code":3,"message":"The command '/bin/sh -c exit 3' returned a non-zero code: 3"},"error":"The command '/bin/sh -c exit 3' returned a non-zero code: 3"}`
	err := feed(t, stream, out.handle)
	var bf *buildFailedError
	if !errors.As(err, &bf) || !strings.Contains(err.Error(), "exit 3") {
		t.Fatalf("error %v", err)
	}
	last := logs[len(logs)-1]
	if !last.GetError() || !strings.Contains(last.GetText(), "non-zero code: 3") || logs[len(logs)-2].GetText() != "partial" {
		t.Fatalf("logs %v", logs)
	}
}

func TestProgressLines(t *testing.T) {
	var p progressLines
	msgs := []jsonmessage.JSONMessage{
		{Status: "The push refers to repository [127.0.0.1:5000/v2/abc]"},
		{ID: "l1", Status: "Preparing"},
		{ID: "l1", Status: "Pushing", Progress: &jsonmessage.JSONProgress{Current: 1200000, Total: 3400000}},
		{ID: "l1", Status: "Pushing", Progress: &jsonmessage.JSONProgress{Current: 3400000, Total: 3400000}},
		{ID: "l1", Status: "Pushed"},
		{ID: "l2", Status: "Layer already exists"},
		{Status: "latest: digest: sha256:1 size: 527"},
	}
	want := []struct {
		text    string
		replace bool
	}{
		{"The push refers to repository [127.0.0.1:5000/v2/abc]", false},
		{"l1: Preparing", false},
		{"l1: Pushing  1.2MB/3.4MB", true},
		{"l1: Pushing  3.4MB/3.4MB", true},
		{"l1: Pushed", false},
		{"l2: Layer already exists", false},
		{"latest: digest: sha256:1 size: 527", false},
	}
	for i := range msgs {
		l := p.line(&msgs[i])
		if l.GetText() != want[i].text || l.GetReplace() != want[i].replace {
			t.Errorf("line %d = %q replace=%v, want %q replace=%v", i, l.GetText(), l.GetReplace(), want[i].text, want[i].replace)
		}
	}
}

func TestRegistryAuthIsBase64URLRegistryToken(t *testing.T) {
	auth, err := registryAuth("eyJ.tok+en/")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.URLEncoding.DecodeString(auth)
	if err != nil {
		t.Fatalf("not base64url: %v", err)
	}
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil || len(m) != 1 || m["registrytoken"] != "eyJ.tok+en/" {
		t.Fatalf("auth JSON %s (%v)", raw, err)
	}
}

func TestValidateSpec(t *testing.T) {
	ok := &pluginv1.BuildSpec{JobId: "j", Host: &pluginv1.HostConfig{Endpoint: "unix:///x"}, ImageRef: "127.0.0.1:5000/v2/abc"}
	if err := validateSpec(ok); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	for name, mutate := range map[string]func(*pluginv1.BuildSpec){
		"no job":    func(s *pluginv1.BuildSpec) { s.JobId = "" },
		"no host":   func(s *pluginv1.BuildSpec) { s.Host = nil },
		"no ref":    func(s *pluginv1.BuildSpec) { s.ImageRef = "" },
		"tagged":    func(s *pluginv1.BuildSpec) { s.ImageRef += ":v1" },
		"bad chars": func(s *pluginv1.BuildSpec) { s.ImageRef = "127.0.0.1:5000/v2/ABC" },
	} {
		s := &pluginv1.BuildSpec{JobId: ok.JobId, Host: ok.Host, ImageRef: ok.ImageRef}
		mutate(s)
		if err := validateSpec(s); !errors.Is(err, sdk.ErrInvalidArgument) {
			t.Errorf("%s: error %v, want ErrInvalidArgument", name, err)
		}
	}
}

func TestNewClientEndpoints(t *testing.T) {
	for _, ep := range []string{"tcp://10.0.0.1:2376", "unix:///var/run/docker.sock"} {
		c, err := newClient(&pluginv1.HostConfig{Endpoint: ep})
		if err != nil {
			t.Errorf("%s: %v", ep, err)
			continue
		}
		_ = c.Close()
	}
	for _, ep := range []string{"", "ssh://u@h", "http://h:2375", "://"} {
		if _, err := newClient(&pluginv1.HostConfig{Endpoint: ep}); !errors.Is(err, sdk.ErrInvalidArgument) {
			t.Errorf("%q: error %v, want ErrInvalidArgument", ep, err)
		}
	}
	if _, err := newClient(&pluginv1.HostConfig{Endpoint: "tcp://h:2376", TlsCa: "/nonexistent/ca.pem"}); err == nil {
		t.Error("TLS with a missing CA file: no error")
	}
}

func TestPlatform(t *testing.T) {
	for in, want := range map[[2]string]string{
		{"linux", "x86_64"}: "linux/amd64", {"linux", "aarch64"}: "linux/arm64/v8", {"linux", "armv7l"}: "linux/arm/v7", {"", "riscv64"}: "linux/riscv64",
	} {
		if got := platform(in[0], in[1]); got != want {
			t.Errorf("platform(%q, %q) = %q, want %q", in[0], in[1], got, want)
		}
	}
}
