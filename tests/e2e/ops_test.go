package e2e

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/tests/harness"
)

// obb runs the operator commands of the built obb against the stack's
// admin surface with the operator token.
func obb(t *testing.T, args ...string) (string, error) {
	t.Helper()
	full := append([]string{args[0], "--admin", env.AdminAddr, "--token", harness.AdminToken}, args[1:]...)
	cmd := exec.Command(filepath.Join(env.Root, "bin", "obb"), full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

func mustObb(t *testing.T, args ...string) string {
	t.Helper()
	out, err := obb(t, args...)
	if err != nil {
		t.Fatalf("obb %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func TestOperatorCommands(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	res := push(t, f, project(t, map[string]string{"Dockerfile": "FROM busybox\nRUN echo ops-" + f.fleet.Slug + "\n"}), harness.PushOptions{})
	if res.IsError {
		t.Fatalf("push:\n%s", res.Text())
	}
	id := strconv.FormatInt(res.ReleaseID, 10)

	if out := mustObb(t, "builds", "ls"); !strings.Contains(out, "ID") || !strings.Contains(out, id) || !strings.Contains(out, f.fleet.Slug) {
		t.Errorf("builds ls:\n%s", out)
	}
	var list struct {
		Builds []struct {
			BuildID string `json:"buildId"`
			State   string `json:"state"`
		} `json:"builds"`
	}
	if err := json.Unmarshal([]byte(mustObb(t, "builds", "ls", "-o", "json")), &list); err != nil || len(list.Builds) == 0 {
		t.Fatalf("builds ls -o json: %v %+v", err, list)
	}
	if out := mustObb(t, "builds", "show", id); !strings.Contains(out, "state:") || !strings.Contains(out, "succeeded") || !strings.Contains(out, "fleet:") ||
		!strings.Contains(out, "job main:  succeeded on amd64") {
		t.Errorf("builds show:\n%s", out)
	}
	if out := mustObb(t, "builds", "logs", "-f", id); !strings.Contains(out, "[Info]     Starting build for") ||
		!strings.Contains(out, "ops-"+f.fleet.Slug) || !strings.Contains(out, "[Build]    succeeded") {
		t.Errorf("builds logs -f:\n%s", out)
	}
	if out, err := obb(t, "builds", "show", "999999"); err == nil || !strings.Contains(out, "not found") {
		t.Errorf("show of an unknown build: %v\n%s", err, out)
	}

	// Hosts: list, drain, resume.
	if out := mustObb(t, "hosts", "ls"); !strings.Contains(out, "amd64") || !strings.Contains(out, "SLOTS") {
		t.Errorf("hosts ls:\n%s", out)
	}
	if out := mustObb(t, "hosts", "drain", "amd64"); !strings.Contains(out, "host amd64: draining") {
		t.Errorf("hosts drain:\n%s", out)
	}
	var hosts struct {
		Hosts []struct {
			Name     string `json:"name"`
			Draining bool   `json:"draining"`
		} `json:"hosts"`
	}
	if err := json.Unmarshal([]byte(mustObb(t, "hosts", "ls", "-o", "json")), &hosts); err != nil {
		t.Fatal(err)
	}
	drained := false
	for _, h := range hosts.Hosts {
		drained = drained || h.Name == "amd64" && h.Draining
	}
	if out := mustObb(t, "hosts", "resume", "amd64"); !drained || !strings.Contains(out, "host amd64: in the pool") {
		t.Errorf("drained %v; hosts resume:\n%s", drained, out)
	}

	// Cancel a running build.
	running := headless(t, f, "ops-cancel-"+f.fleet.Slug)
	if out := mustObb(t, "builds", "cancel", "--reason", "maintenance", strconv.FormatInt(running, 10)); !strings.Contains(out, "cancel requested") {
		t.Errorf("builds cancel:\n%s", out)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if r, _ := env.API.Release(running); r.Status == "cancelled" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the release did not end cancelled")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A wrong token is refused with a message that says what to do.
	cmd := exec.Command(filepath.Join(env.Root, "bin", "obb"), "hosts", "--admin", env.AdminAddr, "--token", "wrong", "ls")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "401") || !strings.Contains(string(out), "OBB_ADMIN_TOKEN") {
		t.Errorf("a wrong token: %v\n%s", err, out)
	}
}
