package driver

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

func TestBuildKitIsUnimplemented(t *testing.T) {
	spec := &pluginv1.BuildSpec{
		JobId: "j", ImageRef: "127.0.0.1:5000/v2/abc",
		Host: &pluginv1.HostConfig{Endpoint: "tcp://127.0.0.1:1", Buildkit: true},
	}
	_, err := New(nil).Build(context.Background(), spec, strings.NewReader(""), func(*pluginv1.Log) error { return nil })
	if !errors.Is(err, sdk.ErrUnimplemented) || !strings.Contains(err.Error(), "BuildKit") {
		t.Fatalf("Build with host.buildkit = %v, want ErrUnimplemented naming BuildKit", err)
	}
}
