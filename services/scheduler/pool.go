package scheduler

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
)

// heartbeatTimeout is how long a host stays healthy without a heartbeat.
const heartbeatTimeout = 45 * time.Second

// host is the scheduler's view of one Docker host.
type host struct {
	info     *schedulerv1.Host
	running  int
	draining bool
	lastSeen time.Time
}

func (h *host) healthy(now time.Time) bool {
	return h.info.GetHealthy() && now.Sub(h.lastSeen) < heartbeatTimeout
}

// problem says why an unhealthy host is out of the pool.
func (h *host) problem(now time.Time) string {
	if now.Sub(h.lastSeen) >= heartbeatTimeout {
		return fmt.Sprintf("its executor (%s) has not reported since %s", h.info.GetExecutorAddress(), h.lastSeen.Format(time.RFC3339))
	}
	return firstLine(h.info.GetHealthMessage(), "unhealthy")
}

func firstLine(s, def string) string {
	if s == "" {
		return def
	}
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// placement is where a job goes.
type placement struct {
	host     string
	executor string
	emulated bool
}

// pool is the set of hosts, their load and the cache-affinity memory.
type pool struct {
	mu       sync.Mutex
	hosts    map[string]*host
	affinity map[string]string // fleet/service -> host that built it last
	now      func() time.Time
}

func newPool(now func() time.Time) *pool {
	return &pool{hosts: map[string]*host{}, affinity: map[string]string{}, now: now}
}

// register adds or refreshes hosts (executor heartbeat).
func (p *pool) register(hs []*schedulerv1.Host) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, in := range hs {
		h, ok := p.hosts[in.GetName()]
		if !ok {
			h = &host{}
			p.hosts[in.GetName()] = h
		}
		h.info = in
		h.lastSeen = p.now()
	}
}

// errUnreachable means every host of the architecture is unhealthy.
type errUnreachable struct {
	arch     string
	problems []string
}

func (e errUnreachable) Error() string {
	return fmt.Sprintf("no reachable Docker host builds %s: %s", e.arch, strings.Join(e.problems, "; "))
}

// errNoHost means no host can ever build the architecture.
type errNoHost struct{ arch string }

func (e errNoHost) Error() string {
	return fmt.Sprintf("no Docker host builds %s, natively or emulated: add one (DOCKER_HOST_ARM64, DOCKER_HOST_AMD64 or hosts: in the config file)", e.arch)
}

// place picks a host for a job and takes a slot on it. It returns ok=false
// when suitable hosts exist but are all busy (the job waits), and an
// errNoHost when none can build the architecture at all.
//
// Order: architecture first (native unless the user asked for emulation;
// the other kind only when no host of the preferred kind is in the pool),
// then a free slot, then cache affinity (the host that built this fleet's
// service last), then least loaded, then name.
func (p *pool) place(arch string, wantEmulated bool, affinityKey string) (placement, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	type cand struct {
		h        *host
		emulated bool
	}
	var cands []cand
	var problems []string
	exists, draining := false, false
	for _, name := range p.namesLocked() {
		h := p.hosts[name]
		native := slices.Contains(h.info.GetNativeArchs(), arch)
		emul := slices.Contains(h.info.GetEmulatedArchs(), arch)
		if !native && !emul {
			continue
		}
		exists = true
		switch {
		case !h.healthy(now):
			problems = append(problems, name+": "+h.problem(now))
		case h.draining:
			draining = true
		default:
			cands = append(cands, cand{h: h, emulated: !native})
		}
	}
	if !exists {
		return placement{}, false, errNoHost{arch: arch}
	}
	if len(cands) == 0 && !draining {
		// Waiting would only end at the build timeout: say what is wrong now.
		return placement{}, false, errUnreachable{arch: arch, problems: problems}
	}
	// The preferred kind (native, or emulated when asked) takes the job
	// whenever such a host is in the pool, even busy: the job waits for it
	// rather than being built the other way.
	preferred := slices.ContainsFunc(cands, func(c cand) bool { return c.emulated == wantEmulated })
	if preferred {
		cands = slices.DeleteFunc(cands, func(c cand) bool { return c.emulated != wantEmulated })
	}
	last := p.affinity[affinityKey]
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		af, bf := a.h.free() > 0, b.h.free() > 0
		if af != bf {
			return af
		}
		if (a.h.info.GetName() == last) != (b.h.info.GetName() == last) {
			return a.h.info.GetName() == last
		}
		if a.h.running != b.h.running {
			return a.h.running < b.h.running
		}
		return a.h.info.GetName() < b.h.info.GetName()
	})
	for _, c := range cands {
		if c.h.free() > 0 {
			c.h.running++
			return placement{host: c.h.info.GetName(), executor: c.h.info.GetExecutorAddress(), emulated: c.emulated}, true, nil
		}
	}
	return placement{}, false, nil
}

func (h *host) free() int { return int(h.info.GetMaxConcurrent()) - h.running }

// release gives a slot back and remembers the host for cache affinity.
func (p *pool) release(hostName, affinityKey string, succeeded bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h, ok := p.hosts[hostName]; ok && h.running > 0 {
		h.running--
	}
	if succeeded {
		p.affinity[affinityKey] = hostName
	}
}

func (p *pool) setDraining(name string, draining bool) (*schedulerv1.Host, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h, ok := p.hosts[name]
	if !ok {
		return nil, fmt.Errorf("host %q is not registered (known: %s)", name, strings.Join(p.namesLocked(), ", "))
	}
	h.draining = draining
	return p.viewLocked(h), nil
}

func (p *pool) list() []*schedulerv1.Host {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*schedulerv1.Host
	for _, n := range p.namesLocked() {
		out = append(out, p.viewLocked(p.hosts[n]))
	}
	return out
}

func (p *pool) namesLocked() []string {
	names := make([]string, 0, len(p.hosts))
	for n := range p.hosts {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
