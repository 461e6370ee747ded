package pool

import (
	"slices"
	"testing"
	"time"
)

// benchSteps RUN steps of about a second each: the cold build's time is
// mostly the steps', as in a real project.
const benchSteps = 5

// maxAffinityRatio bounds repush/cold with affinity placement (issue 8 §5).
const maxAffinityRatio = 0.20

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkRepushOnPool pushes a new multi-step project (a nonce in its
// first layer, then benchSteps RUN steps of about a second) to a builder
// with a pool of three amd64 hosts, then pushes it again unchanged, once
// per placement mode in the same run: affinity (the re-push goes to the
// host with the warm cache) against spread (it goes to another host, which
// builds every step again). Reported per mode: the medians of the cold push
// and the re-push, and their ratio; with affinity the ratio must be at
// most 0.20.
func BenchmarkRepushOnPool(b *testing.B) {
	for _, mode := range []string{affinity, spread} {
		b.Run("placement="+mode, func(b *testing.B) {
			s := poolStack(b, mode)
			f := newFixture(s, "bench")
			var cold, repush []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				dir := project(b, multiStep(benchSteps, "sleep 1"))
				c := push(b, s, f, dir)
				r := push(b, s, f, dir)
				if c.cached() != 0 {
					b.Errorf("cold push on %s: %d steps from the cache, want 0", c.host, c.cached())
				}
				switch {
				case mode == affinity && r.host != c.host:
					b.Errorf("affinity: the re-push went to %s (%q), the cold push to %s", r.host, r.why, c.host)
				case mode == spread && r.host == c.host:
					b.Errorf("spread: the re-push went to %s again", r.host)
				}
				cold, repush = append(cold, c.took), append(repush, r.took)
			}
			b.StopTimer()
			ratio := float64(median(repush)) / float64(median(cold))
			b.ReportMetric(ms(median(cold)), "cold-ms")
			b.ReportMetric(ms(median(repush)), "repush-ms")
			b.ReportMetric(ratio, "repush/cold")
			if mode == affinity && ratio > maxAffinityRatio {
				b.Errorf("affinity: re-push %v is %.2f of the cold push %v, want at most %.2f", median(repush), ratio, median(cold), maxAffinityRatio)
			}
		})
	}
}
