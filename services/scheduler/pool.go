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
	running  int // slots in use (this builder's, or all builders' since the last sync)
	draining bool
	lastSeen time.Time
	given    time.Time // when this builder last placed a job here
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

// placement is where a job goes, and why there.
type placement struct {
	host     string
	executor string
	emulated bool
	why      string
}

// Placement modes (OBB_PLACEMENT).
const (
	// PlaceAffinity sends a job to the host that built the fleet's service
	// last when it has a free slot, else to the least loaded.
	PlaceAffinity = "affinity"
	// PlaceSpread ignores affinity: least loaded, then the host given a
	// job longest ago (round robin).
	PlaceSpread = "spread"
)

// pool is the set of hosts as this builder sees them: health from executor
// heartbeats, load from its ledger.
type pool struct {
	mu    sync.Mutex
	hosts map[string]*host
	now   func() time.Time
}

func newPool(now func() time.Time) *pool {
	return &pool{hosts: map[string]*host{}, now: now}
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

// errNoSecrets means the hosts of the architecture cannot mount the
// service's build secrets (they build with the classic builder).
type errNoSecrets struct {
	arch  string
	hosts []string
}

func (e errNoSecrets) Error() string {
	return fmt.Sprintf("build secrets need BuildKit, and no %s host builds with it (%s uses the classic builder): give one buildkit: true (or DOCKER_BUILDKIT=1), or add a host with plugin: buildkit",
		e.arch, strings.Join(e.hosts, ", "))
}

// errNoHost means no host can ever build the architecture.
type errNoHost struct{ arch string }

func (e errNoHost) Error() string {
	return fmt.Sprintf("no Docker host builds %s, natively or emulated: add one (DOCKER_HOST_ARM64, DOCKER_HOST_AMD64 or hosts: in the config file)", e.arch)
}

// offer is the ordered list of hosts a job may take a slot on.
type offer struct {
	cands    []cand
	last     string // the host that built the job's service last
	lastCand bool   // ... and it is one of cands
	free     int    // cands with a free slot as far as this builder knows
}

type cand struct {
	h        *host
	emulated bool
}

func (o offer) names() []string {
	out := make([]string, len(o.cands))
	for i, c := range o.cands {
		out[i] = c.h.info.GetName()
	}
	return out
}

// candidates orders the hosts that may take a job: architecture first
// (native unless the user asked for emulation; the other kind only when no
// host of the preferred kind is in the pool), then a free slot, then, by
// mode, cache affinity (the host that built this fleet's service last,
// last) or the host given a job longest ago, then least loaded, then name.
// It returns an errNoHost when no host can ever build the architecture and
// an errUnreachable when every one is unhealthy.
func (p *pool) candidates(arch string, wantEmulated, needsSecrets bool, mode, last string) (offer, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
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
		return offer{}, errNoHost{arch: arch}
	}
	if len(cands) == 0 && !draining {
		// Waiting would only end at the build timeout: say what is wrong now.
		return offer{}, errUnreachable{arch: arch, problems: problems}
	}
	// The preferred kind (native, or emulated when asked) takes the job
	// whenever such a host is in the pool, even busy: the job waits for it
	// rather than being built the other way.
	if slices.ContainsFunc(cands, func(c cand) bool { return c.emulated == wantEmulated }) {
		cands = slices.DeleteFunc(cands, func(c cand) bool { return c.emulated != wantEmulated })
	}
	// Build secrets need a host that mounts them (BuildKit): among those of
	// the kind chosen above, never by falling back to emulation.
	if needsSecrets && len(cands) > 0 {
		var without []string
		for _, c := range cands {
			if !c.h.info.GetSecrets() {
				without = append(without, c.h.info.GetName())
			}
		}
		cands = slices.DeleteFunc(cands, func(c cand) bool { return !c.h.info.GetSecrets() })
		if len(cands) == 0 {
			return offer{}, errNoSecrets{arch: arch, hosts: without}
		}
	}
	if mode == PlaceSpread {
		last = ""
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i].h, cands[j].h
		af, bf := a.free() > 0, b.free() > 0
		if af != bf {
			return af
		}
		if (a.info.GetName() == last) != (b.info.GetName() == last) {
			return a.info.GetName() == last
		}
		if a.running != b.running {
			return a.running < b.running
		}
		if mode == PlaceSpread && !a.given.Equal(b.given) {
			return a.given.Before(b.given)
		}
		return a.info.GetName() < b.info.GetName()
	})
	o := offer{cands: cands, last: last}
	for _, c := range cands {
		if c.h.free() > 0 {
			o.free++
		}
		if c.h.info.GetName() == last {
			o.lastCand = true
		}
	}
	return o, nil
}

// took records that this builder placed a job on host.
func (p *pool) took(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h, ok := p.hosts[name]; ok {
		h.running++
		h.given = p.now()
	}
}

func (h *host) free() int { return int(h.info.GetMaxConcurrent()) - h.running }

// gave records that a job of this builder left host.
func (p *pool) gave(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h, ok := p.hosts[name]; ok && h.running > 0 {
		h.running--
	}
}

// sync takes the ledger's view: slots in use by every builder, drain marks.
func (p *pool) sync(load map[string]Load) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, l := range load {
		if h, ok := p.hosts[name]; ok {
			h.running, h.draining = l.Running, l.Draining
		}
	}
}

// known returns an error naming the registered hosts if name is not one.
func (p *pool) known(name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.hosts[name]; !ok {
		return fmt.Errorf("host %q is not registered (known: %s)", name, strings.Join(p.namesLocked(), ", "))
	}
	return nil
}

func (p *pool) view(name string) *schedulerv1.Host {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.viewLocked(p.hosts[name])
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
