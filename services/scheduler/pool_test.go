package scheduler

import (
	"errors"
	"strings"
	"testing"
	"time"

	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
)

func testPool(hosts ...*schedulerv1.Host) *pool {
	p := newPool(time.Now)
	p.register(hosts)
	return p
}

func h(name string, native, emulated []string, slots int32) *schedulerv1.Host {
	return &schedulerv1.Host{Name: name, ExecutorAddress: "exec", NativeArchs: native, EmulatedArchs: emulated, MaxConcurrent: slots, Healthy: true}
}

var (
	amd = []string{"amd64"}
	arm = []string{"aarch64"}
)

func TestPlace(t *testing.T) {
	tests := []struct {
		name         string
		hosts        []*schedulerv1.Host
		arch         string
		wantEmulated bool
		want         string
		wantEmul     bool
		wantNoHost   bool
	}{
		{"native amd64", []*schedulerv1.Host{h("amd", amd, arm, 1), h("arm", arm, amd, 1)}, "amd64", false, "amd", false, false},
		{"native arm", []*schedulerv1.Host{h("amd", amd, arm, 1), h("arm", arm, amd, 1)}, "aarch64", false, "arm", false, false},
		{"no arm host: emulate on amd", []*schedulerv1.Host{h("amd", amd, arm, 1)}, "aarch64", false, "amd", true, false},
		{"asked for emulation", []*schedulerv1.Host{h("amd", amd, arm, 1), h("arm", arm, amd, 1)}, "aarch64", true, "amd", true, false},
		{"asked for emulation, none emulates", []*schedulerv1.Host{h("arm", arm, nil, 1)}, "aarch64", true, "arm", false, false},
		{"least loaded name order", []*schedulerv1.Host{h("b", amd, nil, 2), h("a", amd, nil, 2)}, "amd64", false, "a", false, false},
		{"unknown arch", []*schedulerv1.Host{h("amd", amd, nil, 1)}, "rpi", false, "", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPool(tt.hosts...)
			got, ok, err := p.place(tt.arch, tt.wantEmulated, "fleet/main")
			if tt.wantNoHost {
				var nh errNoHost
				if !errors.As(err, &nh) {
					t.Fatalf("err = %v, want errNoHost", err)
				}
				return
			}
			if err != nil || !ok {
				t.Fatalf("place: ok=%v err=%v", ok, err)
			}
			if got.host != tt.want || got.emulated != tt.wantEmul {
				t.Errorf("placed on %s (emulated %v), want %s (emulated %v)", got.host, got.emulated, tt.want, tt.wantEmul)
			}
		})
	}
}

func TestBusyNativeHostIsWaitedFor(t *testing.T) {
	p := testPool(h("amd", amd, arm, 1), h("arm", arm, amd, 1))
	if got, ok, _ := p.place("amd64", false, "k"); !ok || got.host != "amd" {
		t.Fatalf("first job on %+v", got)
	}
	// amd is full: the next amd64 job waits instead of going to arm emulated.
	if got, ok, err := p.place("amd64", false, "k"); ok || err != nil {
		t.Fatalf("second job placed on %+v (err %v), want it to wait for the native host", got, err)
	}
}

func TestPlaceSlotsDrainAffinity(t *testing.T) {
	p := testPool(h("a", amd, nil, 1), h("b", amd, nil, 1))
	first, _, _ := p.place("amd64", false, "k")
	second, _, _ := p.place("amd64", false, "k")
	if first.host == second.host {
		t.Fatalf("both jobs on %s with one slot each", first.host)
	}
	if _, ok, err := p.place("amd64", false, "k"); ok || err != nil {
		t.Fatalf("third job placed (ok=%v, err=%v) with no free slot", ok, err)
	}
	p.release("b", "k", true)
	p.release("a", "k", false)
	// b built k last: affinity wins over name order.
	if got, _, _ := p.place("amd64", false, "k"); got.host != "b" {
		t.Errorf("affinity: placed on %s, want b", got.host)
	}
	p.release("b", "k", true)
	if _, err := p.setDraining("b", true); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := p.place("amd64", false, "k"); got.host != "a" {
		t.Errorf("drained host used: %s", got.host)
	}
	if _, err := p.setDraining("nope", true); err == nil {
		t.Error("draining an unknown host succeeded")
	}
}

func TestPlaceSkipsStaleHosts(t *testing.T) {
	now := time.Now()
	p := newPool(func() time.Time { return now })
	p.register([]*schedulerv1.Host{h("a", amd, nil, 1)})
	now = now.Add(2 * heartbeatTimeout)
	_, ok, err := p.place("amd64", false, "k")
	var ur errUnreachable
	if ok || !errors.As(err, &ur) || !strings.Contains(err.Error(), "has not reported") {
		t.Fatalf("stale host: ok=%v err=%v, want errUnreachable", ok, err)
	}
	if v := p.list()[0]; v.Healthy {
		t.Error("stale host listed healthy")
	}
}

func TestPlaceUnhealthyHosts(t *testing.T) {
	sick := h("arm", arm, nil, 1)
	sick.Healthy, sick.HealthMessage = false, "Cannot connect to the Docker daemon at tcp://10.0.0.2:2375\nmore"
	p := testPool(h("amd", amd, arm, 1), sick)
	// The healthy emulating host takes the job.
	if got, ok, err := p.place("aarch64", false, "k"); !ok || err != nil || got.host != "amd" || !got.emulated {
		t.Fatalf("placed %+v ok=%v err=%v, want emulated on amd", got, ok, err)
	}
	p.release("amd", "k", true)
	// With no healthy host left, the error names the host and its problem.
	p.register([]*schedulerv1.Host{func() *schedulerv1.Host {
		x := h("amd", amd, arm, 1)
		x.Healthy = false
		x.HealthMessage = "dead"
		return x
	}()})
	_, _, err := p.place("aarch64", false, "k")
	if err == nil || !strings.Contains(err.Error(), "arm: Cannot connect to the Docker daemon at tcp://10.0.0.2:2375") || strings.Contains(err.Error(), "more") || !strings.Contains(err.Error(), "amd: dead") {
		t.Fatalf("err = %v", err)
	}
	// A draining host is a reason to wait, not to fail.
	p.register([]*schedulerv1.Host{h("amd", amd, arm, 1)})
	p.setDraining("amd", true)
	if _, ok, err := p.place("aarch64", false, "k"); ok || err != nil {
		t.Fatalf("with only a draining host: ok=%v err=%v, want wait", ok, err)
	}
}
