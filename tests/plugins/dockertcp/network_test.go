package dockertcp

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/plugins/engine"
	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
	"github.com/open-balena-builder/builder/tests/pluginstack"
)

// testNetworkMode checks that host.network_mode reaches the RUN steps of
// both builders: a RUN lists the network interfaces it sees, which are
// only lo with "none" and this machine's own with "host" (the test daemon
// runs here, in this network namespace).
func testNetworkMode(t *testing.T, env sdktest.Env) {
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var hostNames []string
	for _, i := range ifaces {
		hostNames = append(hostNames, i.Name)
	}
	slices.Sort(hostNames)
	if len(hostNames) < 2 {
		t.Logf("this machine has only %v: none and host look alike", hostNames)
	}
	for _, buildkit := range []bool{false, true} {
		for _, mode := range []string{"none", "host"} {
			t.Run(fmt.Sprintf("buildkit=%v/%s", buildkit, mode), func(t *testing.T) {
				want := []string{"lo"}
				if mode == "host" {
					want = hostNames
				}
				host := &pluginv1.HostConfig{Name: env.Host.GetName(), Endpoint: env.Host.GetEndpoint(), Buildkit: buildkit, NetworkMode: mode}
				if got := runInterfaces(t, env, host); !slices.Equal(got, want) {
					t.Errorf("RUN with network_mode %s sees interfaces %v, want %v", mode, got, want)
				}
			})
		}
	}
}

// runInterfaces builds a Dockerfile whose RUN prints the interface names of
// its network namespace, and returns them sorted.
func runInterfaces(t *testing.T, env sdktest.Env, host *pluginv1.HostConfig) []string {
	t.Helper()
	nonce := randomHex(t, 6)
	// "$p-$N" is put together by the shell, so the marker is in the RUN's
	// output only, not in the step's name.
	dockerfile := "FROM busybox\nARG N\n" +
		`RUN p=ifaces; echo "$p-$N: $(awk -F: 'NR>2{gsub(/ /,"",$1); print $1}' /proc/net/dev | sort | xargs)"` + "\n"
	ref := env.ImageRef(t)
	spec := &pluginv1.BuildSpec{
		JobId: "net-" + nonce, Host: host, Platform: env.Platform, Dockerfile: "Dockerfile", Nocache: true,
		BuildArgs: map[string]string{"N": nonce}, ImageRef: ref, RegistryToken: env.RegistryToken(t, ref[strings.IndexByte(ref, '/')+1:]),
	}
	rec := &sdktest.LogRecorder{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tar := sdktest.ContextTar(t, map[string]string{"Dockerfile": dockerfile})
	if _, err := engine.New(pluginstack.TestLogger(t)).Build(ctx, spec, bytes.NewReader(tar), rec.Sink()); err != nil {
		t.Fatalf("Build: %v\nlogs:\n%s", err, rec)
	}
	marker := "ifaces-" + nonce + ":"
	l, ok := rec.Find(marker)
	if !ok {
		t.Fatalf("no line with %q; logs:\n%s", marker, rec)
	}
	_, names, _ := strings.Cut(l.GetText(), marker)
	got := strings.Fields(names)
	slices.Sort(got)
	return got
}
