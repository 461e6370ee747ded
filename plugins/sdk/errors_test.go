package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-balena-builder/builder/plugins/sdk"
	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

func TestErrorsKeepMessageAndCode(t *testing.T) {
	cases := []struct {
		name     string
		err      error
		code     codes.Code
		sentinel error
	}{
		{"plain", errors.New(`The command '/bin/sh -c exit 3' returned a non-zero code: 3`), codes.Unknown, nil},
		{"canceled", fmt.Errorf("build cancelled: %w", context.Canceled), codes.Canceled, context.Canceled},
		{"deadline", fmt.Errorf("push: %w", context.DeadlineExceeded), codes.DeadlineExceeded, context.DeadlineExceeded},
		{"not found", fmt.Errorf("job j9: %w", sdk.ErrNotFound), codes.NotFound, sdk.ErrNotFound},
		{"invalid", fmt.Errorf("image_ref: %w", sdk.ErrInvalidArgument), codes.InvalidArgument, sdk.ErrInvalidArgument},
		{"unimplemented", fmt.Errorf("buildkit: %w", sdk.ErrUnimplemented), codes.Unimplemented, sdk.ErrUnimplemented},
		{"status", status.Error(codes.PermissionDenied, "denied"), codes.PermissionDenied, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			exec := sdktest.Serve(t, &sdktest.FakeExecutor{
				BuildF: func(context.Context, *pluginv1.BuildSpec, io.Reader, sdk.LogSink) (*pluginv1.Result, error) {
					return nil, tc.err
				},
				InfoF: func(context.Context) (*pluginv1.InfoResponse, error) { return nil, tc.err },
				CapabilitiesF: func(context.Context, *pluginv1.HostConfig) (*pluginv1.CapabilitiesResponse, error) {
					return nil, tc.err
				},
			})
			ctx := context.Background()
			_, buildErr := exec.Build(ctx, &pluginv1.BuildSpec{}, strings.NewReader(""), func(*pluginv1.Log) error { return nil })
			_, infoErr := exec.Info(ctx)
			_, capErr := exec.Capabilities(ctx, &pluginv1.HostConfig{})
			for call, err := range map[string]error{"Build": buildErr, "Info": infoErr, "Capabilities": capErr} {
				want := tc.err.Error()
				if st, ok := status.FromError(tc.err); ok {
					want = st.Message()
				}
				if err == nil || err.Error() != want {
					t.Errorf("%s error = %v, want message %q", call, err, want)
				}
				if status.Code(err) != tc.code {
					t.Errorf("%s code = %v, want %v", call, status.Code(err), tc.code)
				}
				if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
					t.Errorf("%s error %v is not %v", call, err, tc.sentinel)
				}
			}
		})
	}
}

func TestHealth(t *testing.T) {
	exec := sdktest.Serve(t, &sdktest.FakeExecutor{
		HealthF: func(_ context.Context, host *pluginv1.HostConfig) error {
			if host.GetEndpoint() == "tcp://127.0.0.1:1" {
				return errors.New("ping tcp://127.0.0.1:1: connection refused")
			}
			return nil
		},
	})
	if err := exec.Health(context.Background(), &pluginv1.HostConfig{Endpoint: "unix:///ok"}); err != nil {
		t.Fatalf("Health(ok) = %v", err)
	}
	err := exec.Health(context.Background(), &pluginv1.HostConfig{Endpoint: "tcp://127.0.0.1:1"})
	if !errors.Is(err, sdk.ErrUnhealthy) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Health(dead) = %v, want ErrUnhealthy with the plugin's message", err)
	}
}

func TestInfoAndCapabilities(t *testing.T) {
	exec := sdktest.Serve(t, &sdktest.FakeExecutor{
		CapabilitiesF: func(_ context.Context, host *pluginv1.HostConfig) (*pluginv1.CapabilitiesResponse, error) {
			return &pluginv1.CapabilitiesResponse{NativePlatforms: []string{"linux/amd64"}, EngineVersion: host.GetName()}, nil
		},
	})
	info, err := exec.Info(context.Background())
	if err != nil || info.GetName() != "fake" || len(info.GetApiVersions()) != 1 || info.GetApiVersions()[0] != sdk.APIVersion {
		t.Fatalf("Info = %v, %v", info, err)
	}
	caps, err := exec.Capabilities(context.Background(), &pluginv1.HostConfig{Name: "20.10"})
	if err != nil || caps.GetEngineVersion() != "20.10" || caps.GetNativePlatforms()[0] != "linux/amd64" {
		t.Fatalf("Capabilities = %v, %v", caps, err)
	}
}
