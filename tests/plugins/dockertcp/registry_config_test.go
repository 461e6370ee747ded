package dockertcp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/open-balena-builder/builder/plugins/engine"
	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
	"github.com/open-balena-builder/builder/tests/pluginstack"
)

// testRegistryConfig checks that registry_config reaches the daemon: a base
// image that only the (token-auth) registry has is pulled for FROM by both
// builders with the credentials, and not without them; pull_image pulls it
// the same way. The password shows in no log line and no error.
func testRegistryConfig(t *testing.T, env sdktest.Env, login registryLogin) {
	c, err := client.NewClientWithOpts(client.WithHost(env.DockerHost), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The private registry is the test registry under another name
	// (localhost:<port>): its own registry (127.0.0.1:<port>), the job
	// reaches with its job token only, whatever registry_config says.
	private := strings.Replace(login.registry, "127.0.0.1:", "localhost:", 1)
	cfg, err := json.Marshal(map[string]map[string]string{
		private: {"username": login.username, "password": login.password, "serveraddress": private},
	})
	if err != nil {
		t.Fatal(err)
	}

	// The private base image: built, pushed, then untagged on the host
	// before each build, so that FROM has to pull it.
	built := env.ImageRef(t)
	baseRes, rec, err := buildWith(t, env, env.Host, &pluginv1.BuildSpec{ImageRef: built},
		"FROM busybox\nRUN echo from-base > /private\n")
	if err != nil {
		t.Fatalf("build the base image: %v\nlogs:\n%s", err, rec)
	}
	base := strings.Replace(built, login.registry, private, 1)

	for _, buildkit := range []bool{false, true} {
		host := &pluginv1.HostConfig{Name: env.Host.GetName(), Endpoint: env.Host.GetEndpoint(), Buildkit: buildkit}
		if buildkit {
			host.NetworkMode = "none" // the test daemon has no bridge
		}
		// Without credentials first: BuildKit keeps registry tokens for a while.
		for _, auth := range []bool{false, true} {
			t.Run(fmt.Sprintf("FROM/buildkit=%v/auth=%v", buildkit, auth), func(t *testing.T) {
				untag(t, c, base+":latest")
				spec := &pluginv1.BuildSpec{ImageRef: env.ImageRef(t), Nocache: true}
				if auth {
					spec.RegistryConfig = string(cfg)
				}
				_, rec, err := buildWith(t, env, host, spec, "FROM "+base+"\nRUN s=private; echo \"$s-$(cat /private)\"\n")
				checkNoPassword(t, login.password, rec, err)
				switch {
				case auth && err != nil:
					t.Fatalf("Build FROM the private image with registry_config: %v\nlogs:\n%s", err, rec)
				case auth:
					if _, ok := rec.Find("private-from-base"); !ok {
						t.Errorf("no line private-from-base; logs:\n%s", rec)
					}
					// Pulled fresh for this build, and gone with it; the
					// public base image stays.
					checkGone(t, c, base+":latest")
					if _, err := c.ImageInspect(context.Background(), "busybox"); err != nil {
						t.Errorf("busybox is gone after the build: %v", err)
					}
				case err == nil:
					t.Fatalf("Build FROM the private image without credentials succeeded; logs:\n%s", rec)
				default:
					t.Logf("without credentials: %v", err)
				}
			})
		}
		// The build with credentials left the base's manifest on the host
		// (BuildKit's content store, the daemon's manifest store): named by
		// digest, it must still take the credentials.
		t.Run(fmt.Sprintf("FROM/buildkit=%v/by digest without credentials", buildkit), func(t *testing.T) {
			spec := &pluginv1.BuildSpec{ImageRef: env.ImageRef(t), Nocache: true}
			_, rec, err := buildWith(t, env, host, spec, "FROM "+base+"@"+baseRes.GetDigest()+"\nRUN s=private; echo \"$s-$(cat /private)\"\n")
			if err == nil || rec.String() != "" && strings.Contains(rec.String(), "private-from-base") {
				t.Fatalf("a build FROM the private image by digest without credentials ran (%v); logs:\n%s", err, rec)
			}
			t.Logf("refused: %v", err)
		})
	}

	// A base image of a registry the job has credentials for, whose ONBUILD
	// trigger takes the private image by digest, whose manifest the host
	// has from the builds above (under the openBalena registry's name, which
	// gives it to nobody else): no build runs the trigger.
	trigger := env.ImageRef(t)
	if _, rec, err := buildWith(t, env, env.Host, &pluginv1.BuildSpec{ImageRef: trigger},
		"FROM busybox\nONBUILD COPY --from="+built+"@"+baseRes.GetDigest()+" /private /stolen\n"); err != nil {
		t.Fatalf("build the image with the trigger: %v\nlogs:\n%s", err, rec)
	}
	for _, buildkit := range []bool{false, true} {
		host := &pluginv1.HostConfig{Name: env.Host.GetName(), Endpoint: env.Host.GetEndpoint(), Buildkit: buildkit}
		if buildkit {
			host.NetworkMode = "none"
		}
		t.Run(fmt.Sprintf("ONBUILD COPY --from by digest/buildkit=%v", buildkit), func(t *testing.T) {
			spec := &pluginv1.BuildSpec{ImageRef: env.ImageRef(t), Nocache: true, RegistryConfig: string(cfg)}
			_, rec, err := buildWith(t, env, host, spec, "FROM "+strings.Replace(trigger, login.registry, private, 1)+"\nRUN s=stolen; echo \"$s-$(cat /stolen)\"\n")
			if err == nil || strings.Contains(rec.String(), "stolen-from-base") {
				t.Fatalf("the trigger took the private image (%v); logs:\n%s", err, rec)
			}
			t.Logf("refused: %v", err)
		})
	}

	for _, auth := range []bool{false, true} {
		t.Run(fmt.Sprintf("PullImage/auth=%v", auth), func(t *testing.T) {
			untag(t, c, base+":latest")
			spec := &pluginv1.BuildSpec{ImageRef: env.ImageRef(t), PullImage: base}
			if auth {
				spec.RegistryConfig = string(cfg)
			}
			res, rec, err := buildWith(t, env, env.Host, spec, "")
			checkNoPassword(t, login.password, rec, err)
			if !auth {
				if err == nil {
					t.Fatalf("pull_image of the private image without credentials succeeded; logs:\n%s", rec)
				}
				if l, ok := rec.Find("could not pull " + base); !ok || !l.GetError() {
					t.Errorf("no error line \"could not pull %s\"; logs:\n%s", base, rec)
				}
				return
			}
			if err != nil {
				t.Fatalf("pull_image of the private image with registry_config: %v\nlogs:\n%s", err, rec)
			}
			if _, ok := rec.Find("could not pull"); ok {
				t.Errorf("the pull failed; logs:\n%s", rec)
			}
			if !strings.HasPrefix(res.GetDigest(), "sha256:") {
				t.Errorf("result %v, want a digest", res)
			}
		})
	}
}

// buildWith runs one Build of the driver on host with spec (job id,
// platform, registry token and Dockerfile filled in).
func buildWith(t *testing.T, env sdktest.Env, host *pluginv1.HostConfig, spec *pluginv1.BuildSpec, dockerfile string) (*pluginv1.Result, *sdktest.LogRecorder, error) {
	t.Helper()
	spec.JobId = "reg-" + randomHex(t, 6)
	spec.Host = host
	spec.Platform = env.Platform
	spec.RegistryToken = env.RegistryToken(t, spec.GetImageRef()[strings.IndexByte(spec.GetImageRef(), '/')+1:])
	var buildContext []byte
	if spec.GetPullImage() == "" {
		spec.Dockerfile = "Dockerfile"
		buildContext = sdktest.ContextTar(t, map[string]string{"Dockerfile": dockerfile})
	}
	rec := &sdktest.LogRecorder{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := engine.New(pluginstack.TestLogger(t)).Build(ctx, spec, bytes.NewReader(buildContext), rec.Sink())
	return res, rec, err
}

// untag removes ref from the host (the image stays if other tags or images
// use it).
func untag(t *testing.T, c *client.Client, ref string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.ImageRemove(ctx, ref, image.RemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		t.Fatalf("untag %s: %v", ref, err)
	}
}

// checkGone fails when the host still has ref.
func checkGone(t *testing.T, c *client.Client, ref string) {
	t.Helper()
	if _, err := c.ImageInspect(context.Background(), ref); !cerrdefs.IsNotFound(err) {
		t.Errorf("the host still has %s after the build (inspect: %v)", ref, err)
	}
}

func checkNoPassword(t *testing.T, password string, rec *sdktest.LogRecorder, err error) {
	t.Helper()
	if strings.Contains(rec.String(), password) {
		t.Errorf("a log line holds the registry password")
	}
	if err != nil && strings.Contains(err.Error(), password) {
		t.Errorf("the error holds the registry password")
	}
}
