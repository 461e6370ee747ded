package ledgertest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
	"github.com/open-balena-builder/builder/services/scheduler"
)

// Dispatch sizes of the benchmark: jobs placed per run, simulated hosts,
// and jobs kept running (the pool stays busy, not full).
const (
	DispatchJobs  = 10_000
	DispatchHosts = 100
	keepRunning   = 300
)

// BenchmarkDispatch places DispatchJobs jobs of 50 fleets × 4 services over
// DispatchHosts hosts (4 slots each) through s, keeping keepRunning of them
// running (the oldest ends when one more would exceed it), and reports the
// latency of one dispatch (affinity lookup, candidate order, slot taken in
// the ledger) at p50, p99 and max. s must be new, with its own ledger.
func BenchmarkDispatch(b *testing.B, s *scheduler.Server) {
	ctx := context.Background()
	hosts := make([]*schedulerv1.Host, DispatchHosts)
	for i := range hosts {
		hosts[i] = &schedulerv1.Host{Name: fmt.Sprintf("host-%03d", i), ExecutorAddress: "exec", NativeArchs: []string{"amd64"},
			MaxConcurrent: 4, Healthy: true}
	}
	if _, err := s.RegisterHosts(ctx, &schedulerv1.RegisterHostsRequest{Hosts: hosts}); err != nil {
		b.Fatal(err)
	}
	type running struct {
		job  *buildv1.Job
		host string
	}
	var lat []time.Duration
	n := 0
	b.ResetTimer()
	for range b.N {
		var queue []running
		for range DispatchJobs {
			n++
			j := &buildv1.Job{JobId: fmt.Sprintf("job-%d", n), Fleet: fmt.Sprintf("org/fleet-%d", n%50), Service: fmt.Sprintf("svc-%d", n%4), Arch: "amd64"}
			if len(queue) >= keepRunning {
				s.Done(queue[0].job, queue[0].host, true)
				queue = queue[1:]
			}
			t0 := time.Now()
			host, _, ok, err := s.Place(ctx, j)
			lat = append(lat, time.Since(t0))
			if err != nil || !ok {
				b.Fatalf("dispatch %d: ok=%v err=%v", n, ok, err)
			}
			queue = append(queue, running{j, host})
		}
		for _, r := range queue {
			s.Done(r.job, r.host, true)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(f float64) float64 { return float64(lat[int(f*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.5), "µs-p50/dispatch")
	b.ReportMetric(q(0.99), "µs-p99/dispatch")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "µs-max/dispatch")
	b.ReportMetric(0, "ns/op")
}
