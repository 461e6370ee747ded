package sdktest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// Env is what the contract suite needs from its caller: a real build host
// and a registry that accepts token pushes.
//
// The suite runs for the builder Host asks for: with Host.Buildkit set, the
// plugin must report BuildKit in Capabilities and build with it. BuildKit
// runs RUN steps in no container of the daemon: the suite checks that its
// RUN process stops with HostProcesses, when the caller can see the host's
// processes, and otherwise only that Build returns Canceled promptly.
//
// Besides building, the suite checks the spec's other features on every
// host: target (only the named stage is built), pull_image (of an image
// only the host has: the suite tags BaseImage as localonly/busybox:contract,
// whose pull fails, and the plugin must use the host's copy) and build
// secrets: on a BuildKit host a RUN reads one and no layer of the saved
// image holds it; a classic-builder host refuses the build with an
// invalid-argument error that names BuildKit. And tenancy (contract_tenancy.go):
// no tag of a job stays on the host, a job cannot take another repository's
// image from the host (as pull_image, FROM, COPY --from or an ONBUILD
// trigger's, by name, by digest or by image id) nor push anything of it,
// a job can build FROM its own repository with its own token, a base image
// a job did not pull stays, and the layer cache still serves identical
// builds ("Using cache" or BuildKit's "CACHED", by host.buildkit); on a
// BuildKit host, cache mounts are each build's own and custom frontends
// are refused.
type Env struct {
	// Host is the build host handed to the plugin (its buildkit and
	// network_mode apply to every build of the suite).
	Host *pluginv1.HostConfig
	// DockerHost reaches the same daemon for the suite's own checks
	// (unix:///path or tcp://host:port).
	DockerHost string
	// Platform to build for (linux/amd64); the daemon must run it natively
	// or through binfmt.
	Platform string
	// BaseImage is the FROM of the test Dockerfiles, present on the daemon
	// (default "busybox").
	BaseImage string
	// ImageRef returns a fresh "<registry>/v2/<hash>" to push to.
	ImageRef func(t *testing.T) string
	// RegistryToken returns a pull/push registry token for repo ("v2/<hash>").
	RegistryToken func(t *testing.T, repo string) string
	// HostProcesses, if set, returns the command lines of the processes on
	// the build host that contain marker. The cancel tests then also check
	// that the build's RUN process runs before the cancel and is gone
	// after it. Set it whenever the caller can see the host's processes
	// (a local daemon): for BuildKit builds it is the only check that the
	// RUN really stopped.
	HostProcesses func(t *testing.T, marker string) []string
	// NoImageStore says the build host keeps no images of its own (a
	// standalone buildkitd: it builds from registries and pushes straight
	// to one; DockerHost is then only where the suite pulls the pushed
	// images to check them). The cases about a Docker daemon's image
	// store change: pull_image re-pushes BaseImage from its registry
	// instead of falling back to a copy only the host has, the suite puts
	// no tenant's image on the host by name, and the result's size is
	// not compared with the daemon's (it is the image's in the registry).
	NoImageStore bool
}

// Timeouts of the suite. Builds are tiny; the margins are for slow CI hosts.
const (
	buildTimeout  = 2 * time.Minute
	cancelTimeout = 20 * time.Second // from cancel to Build's return
)

// RunContract runs the suite every executor plugin must pass, against the
// Executor newExec returns (called once per subtest).
func RunContract(t *testing.T, newExec func(t *testing.T) sdk.Executor, env Env) {
	t.Helper()
	if env.BaseImage == "" {
		env.BaseImage = "busybox"
	}
	t.Run("Info", func(t *testing.T) { testInfo(t, newExec(t)) })
	t.Run("Capabilities", func(t *testing.T) { testCapabilities(t, newExec(t), env) })
	t.Run("Health", func(t *testing.T) { testHealth(t, newExec(t), env) })
	t.Run("Build", func(t *testing.T) { testBuild(t, newExec(t), env) })
	t.Run("BuildFails", func(t *testing.T) { testBuildFails(t, newExec(t), env) })
	t.Run("Target", func(t *testing.T) { testTarget(t, newExec(t), env) })
	t.Run("PullImage", func(t *testing.T) { testPullImage(t, newExec(t), env) })
	t.Run("Tenancy", func(t *testing.T) { testTenancy(t, newExec(t), env) })
	if env.Host.GetBuildkit() {
		t.Run("BuildKitTenancy", func(t *testing.T) { testBuildKitTenancy(t, newExec(t), env) })
		t.Run("Secrets", func(t *testing.T) { testSecrets(t, newExec(t), env) })
	} else {
		t.Run("SecretsNeedBuildKit", func(t *testing.T) { testSecretsClassic(t, newExec(t), env) })
	}
	t.Run("CancelContext", func(t *testing.T) { testCancel(t, newExec(t), env, false) })
	// Across the plugin boundary the host also stops a build by its job id
	// (the Cancel RPC); a driver called directly has only its ctx.
	if _, ok := newExec(t).(sdk.Canceller); ok {
		t.Run("CancelJob", func(t *testing.T) { testCancel(t, newExec(t), env, true) })
		t.Run("CancelUnknownJob", func(t *testing.T) { testCancelUnknown(t, newExec(t)) })
	}
}

func testInfo(t *testing.T, exec sdk.Executor) {
	info, err := exec.Info(context.Background())
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if info.GetName() == "" || info.GetVersion() == "" {
		t.Errorf("Info = %v, want a name and a version", info)
	}
	if !slices.Contains(info.GetApiVersions(), sdk.APIVersion) {
		t.Errorf("Info api_versions = %v, want %d among them", info.GetApiVersions(), sdk.APIVersion)
	}
}

func testCapabilities(t *testing.T, exec sdk.Executor, env Env) {
	caps, err := exec.Capabilities(context.Background(), env.Host)
	if err != nil {
		t.Fatalf("Capabilities: %v", err)
	}
	if len(caps.GetNativePlatforms()) == 0 || caps.GetEngineVersion() == "" {
		t.Errorf("Capabilities = %v, want native platforms and an engine version", caps)
	}
	for _, p := range caps.GetNativePlatforms() {
		if strings.Count(p, "/") < 1 {
			t.Errorf("native platform %q is not os/arch[/variant]", p)
		}
	}
	if env.Host.GetBuildkit() && !caps.GetBuildkit() {
		t.Errorf("Capabilities = %v, want buildkit: the suite builds with host.buildkit on this host", caps)
	}
	if caps.GetSecrets() != env.Host.GetBuildkit() {
		t.Errorf("Capabilities = %v, want secrets %v: build secrets need BuildKit, and the suite builds with host.buildkit %v",
			caps, env.Host.GetBuildkit(), env.Host.GetBuildkit())
	}
}

func testHealth(t *testing.T, exec sdk.Executor, env Env) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := exec.Health(ctx, env.Host); err != nil {
		t.Errorf("Health(%s) = %v, want nil", env.Host.GetEndpoint(), err)
	}
	dead := &pluginv1.HostConfig{Name: "dead", Endpoint: "tcp://127.0.0.1:1"}
	if err := exec.Health(ctx, dead); err == nil {
		t.Errorf("Health(%s) = nil, want an error", dead.GetEndpoint())
	}
}

func testCancelUnknown(t *testing.T, exec sdk.Executor) {
	if err := exec.(sdk.Canceller).Cancel(context.Background(), "no-such-job"); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("Cancel(no-such-job) = %v, want an error wrapping sdk.ErrNotFound", err)
	}
}
