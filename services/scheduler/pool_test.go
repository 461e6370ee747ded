package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
)

// placer is a scheduler reduced to its pool and an in-memory ledger.
type placer struct {
	*Server
	n    int
	jobs map[string]*buildv1.Job // host → last job placed there
}

func testPool(hosts ...*schedulerv1.Host) *placer {
	return testPoolAt(newPool(time.Now), PlaceAffinity, hosts...)
}

func testPoolAt(p *pool, mode string, hosts ...*schedulerv1.Host) *placer {
	s := &Server{cfg: Config{Placement: mode}, ledger: NewMemoryLedger("test"), pool: p, log: slog.New(slog.DiscardHandler), freed: make(chan struct{})}
	s.register(hosts...)
	return &placer{Server: s, jobs: map[string]*buildv1.Job{}}
}

func (s *Server) register(hosts ...*schedulerv1.Host) {
	if _, err := s.RegisterHosts(context.Background(), &schedulerv1.RegisterHostsRequest{Hosts: hosts}); err != nil {
		panic(err)
	}
}

// place places a job of key (fleet/service) for arch.
func (p *placer) place(arch string, emulated bool, key string) (placement, bool, error) {
	p.n++
	fleet, svc, _ := strings.Cut(key, "/")
	j := &buildv1.Job{JobId: fmt.Sprintf("job-%d", p.n), Fleet: fleet, Service: svc, Arch: arch, Emulated: emulated}
	pl, ok, err := p.Server.place(context.Background(), j, key, p.lastHost(context.Background(), j, key))
	if ok {
		p.jobs[pl.host] = j
	}
	return pl, ok, err
}

// release ends the last job placed on host; succeeded records affinity.
func (p *placer) release(host, key string, succeeded bool) {
	p.giveBack(p.jobs[host], host)
	if succeeded {
		p.ledger.Remember(context.Background(), key, host)
	}
}

func (p *placer) setDraining(name string, draining bool) (*schedulerv1.DrainHostResponse, error) {
	return p.Server.setDraining(context.Background(), name, draining)
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
	p := testPoolAt(newPool(func() time.Time { return now }), PlaceAffinity, h("a", amd, nil, 1))
	now = now.Add(2 * heartbeatTimeout)
	_, ok, err := p.place("amd64", false, "k")
	var ur errUnreachable
	if ok || !errors.As(err, &ur) || !strings.Contains(err.Error(), "has not reported") {
		t.Fatalf("stale host: ok=%v err=%v, want errUnreachable", ok, err)
	}
	if v := p.pool.list()[0]; v.Healthy {
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
	p.register(func() *schedulerv1.Host {
		x := h("amd", amd, arm, 1)
		x.Healthy = false
		x.HealthMessage = "dead"
		return x
	}())
	_, _, err := p.place("aarch64", false, "k")
	if err == nil || !strings.Contains(err.Error(), "arm: Cannot connect to the Docker daemon at tcp://10.0.0.2:2375") || strings.Contains(err.Error(), "more") || !strings.Contains(err.Error(), "amd: dead") {
		t.Fatalf("err = %v", err)
	}
	// A draining host is a reason to wait, not to fail.
	p.register(h("amd", amd, arm, 1))
	p.setDraining("amd", true)
	if _, ok, err := p.place("aarch64", false, "k"); ok || err != nil {
		t.Fatalf("with only a draining host: ok=%v err=%v, want wait", ok, err)
	}
}

func TestPlacementSaysWhy(t *testing.T) {
	p := testPool(h("a", amd, nil, 1), h("b", amd, nil, 1), h("c", amd, nil, 1))
	first, _, _ := p.place("amd64", false, "org/f/main")
	if first.host != "a" || first.why != "Building on a: least loaded of 3 free hosts" {
		t.Errorf("first placement: %+v", first)
	}
	p.release("a", "org/f/main", true)
	again, _, _ := p.place("amd64", false, "org/f/main")
	if again.host != "a" || again.why != "Building on a: it built org/f/main last, its cache is warm" {
		t.Errorf("re-push: %+v", again)
	}
	// a is busy now: the next build of the same service goes elsewhere and says so.
	busy, _, _ := p.place("amd64", false, "org/f/main")
	if busy.host != "b" || busy.why != "Building on b: least loaded of 2 free hosts (a built org/f/main last but is busy)" {
		t.Errorf("affine host busy: %+v", busy)
	}
	p.release("a", "org/f/main", false)
	if _, err := p.setDraining("a", true); err != nil {
		t.Fatal(err)
	}
	gone, _, _ := p.place("amd64", false, "org/f/main")
	if gone.host != "c" || gone.why != "Building on c: least loaded of 1 free host (a built org/f/main last but is not available)" {
		t.Errorf("affine host drained: %+v", gone)
	}
	only := testPool(h("solo", amd, nil, 2))
	if pl, _, _ := only.place("amd64", false, "org/g/main"); pl.why != "Building on solo: the only host that builds amd64" {
		t.Errorf("one host: %+v", pl)
	}
}

func TestSpreadIgnoresAffinity(t *testing.T) {
	p := testPoolAt(newPool(time.Now), PlaceSpread, h("a", amd, nil, 1), h("b", amd, nil, 1), h("c", amd, nil, 1))
	var got []string
	for range 4 {
		pl, ok, err := p.place("amd64", false, "org/f/main")
		if !ok || err != nil {
			t.Fatalf("ok=%v err=%v", ok, err)
		}
		if pl.why != "Building on "+pl.host+": spread placement (OBB_PLACEMENT=spread)" {
			t.Errorf("why = %q", pl.why)
		}
		got = append(got, pl.host)
		p.release(pl.host, "org/f/main", true)
	}
	if strings.Join(got, ",") != "a,b,c,a" {
		t.Errorf("unchanged re-pushes went to %v, want a round robin a,b,c,a", got)
	}
}

func TestUnknownPlacementIsRefused(t *testing.T) {
	if _, err := New(Config{Placement: "random"}, nil, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "affinity") {
		t.Errorf("err = %v", err)
	}
}

func TestJobsWithSecretsGoToHostsThatMountThem(t *testing.T) {
	bk := h("bk", amd, nil, 1)
	bk.Secrets = true
	p := testPool(h("classic", amd, nil, 1), bk)
	place := func(needs bool) (placement, bool, error) {
		p.n++
		j := &buildv1.Job{JobId: fmt.Sprintf("s-%d", p.n), Fleet: "org/f", Service: "main", Arch: "amd64", NeedsSecrets: needs}
		return p.Server.place(context.Background(), j, "org/f/main", "")
	}
	if got, ok, err := place(true); !ok || err != nil || got.host != "bk" {
		t.Fatalf("a job with secrets went to %+v (ok=%v err=%v), want bk", got, ok, err)
	}
	// bk is full: the next one waits for it rather than going to the classic host.
	if got, ok, err := place(true); ok || err != nil {
		t.Fatalf("a job with secrets placed on %+v (err %v) while the only BuildKit host is busy", got, err)
	}
	if got, ok, _ := place(false); !ok || got.host != "classic" {
		t.Errorf("a job without secrets: %+v", got)
	}
	// A classic native host and a BuildKit host that would emulate: the
	// job is refused, not emulated.
	emul := h("arm-bk", arm, amd, 1)
	emul.Secrets = true
	only := testPool(h("classic", amd, nil, 1), emul)
	only.n = 100
	j := &buildv1.Job{JobId: "x", Fleet: "org/f", Service: "main", Arch: "amd64", NeedsSecrets: true}
	_, _, err := only.Server.place(context.Background(), j, "org/f/main", "")
	var ns errNoSecrets
	if !errors.As(err, &ns) || !strings.Contains(err.Error(), "build secrets need BuildKit") || !strings.Contains(err.Error(), "classic uses the classic builder") {
		t.Errorf("with no BuildKit host: %v", err)
	}
}
