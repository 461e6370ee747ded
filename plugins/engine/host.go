package engine

import (
	"context"
	"fmt"

	"github.com/docker/docker/api/types/versions"

	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// Health pings the daemon.
func (d *Driver) Health(ctx context.Context, host *pluginv1.HostConfig) error {
	c, err := d.newClient(host)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Ping(ctx); err != nil {
		return engineError(fmt.Sprintf("ping %s", host.GetEndpoint()), err)
	}
	return nil
}

// buildKitMinAPI is the first Engine API version whose BuildKit builds work
// without a session (Docker 18.09).
const buildKitMinAPI = "1.39"

// Capabilities reports the daemon's own platform and engine version, and
// BuildKit when the daemon is a Linux one speaking API 1.39 or later.
// Secrets are reported when the host builds with BuildKit (host.buildkit)
// and the daemon can: they are mounted through a BuildKit session, which
// the classic builder has not.
func (d *Driver) Capabilities(ctx context.Context, host *pluginv1.HostConfig) (*pluginv1.CapabilitiesResponse, error) {
	c, err := d.newClient(host)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ping, err := c.Ping(ctx)
	if err != nil {
		return nil, engineError(fmt.Sprintf("ping %s", host.GetEndpoint()), err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, engineError(fmt.Sprintf("info %s", host.GetEndpoint()), err)
	}
	buildkit := buildKitCapable(info.OSType, ping.APIVersion)
	return &pluginv1.CapabilitiesResponse{
		NativePlatforms: []string{platform(info.OSType, info.Architecture)},
		Buildkit:        buildkit,
		Secrets:         buildkit && host.GetBuildkit(),
		EngineVersion:   info.ServerVersion,
	}, nil
}

// buildKitCapable tells whether a daemon of osType speaking apiVersion
// builds with BuildKit.
func buildKitCapable(osType, apiVersion string) bool {
	return osType == "linux" && apiVersion != "" && versions.GreaterThanOrEqualTo(apiVersion, buildKitMinAPI)
}

// platform turns the daemon's uname-style OS and architecture into a Docker
// platform string ("x86_64" → linux/amd64, "aarch64" → linux/arm64/v8).
func platform(osType, arch string) string {
	if osType == "" {
		osType = "linux"
	}
	switch arch {
	case "x86_64", "amd64":
		arch = "amd64"
	case "aarch64", "arm64":
		arch = "arm64/v8"
	case "armv7l", "armhf":
		arch = "arm/v7"
	case "armv6l", "armel":
		arch = "arm/v6"
	case "i386", "i686":
		arch = "386"
	}
	return osType + "/" + arch
}
