package scheduler

import (
	"context"
	"sync"
)

// Ledger keeps the host slots, drain marks and cache affinity. One builder
// may keep them in memory; builders sharing a database keep them there, so
// that a host's max_concurrent holds across all of them and a drain or an
// affinity one of them records is every one's.
type Ledger interface {
	// Register records hosts and their max_concurrent (executor
	// heartbeats); a host's slots in use and drain mark stay.
	Register(ctx context.Context, hosts []Slots) error
	// Take gives job a slot on the first host of hosts, in their order,
	// that is registered, not drained and has one free; it returns that
	// host, or "" when none has.
	Take(ctx context.Context, job string, hosts []string) (string, error)
	// Give returns job's slot; giving a slot back twice is no error.
	Give(ctx context.Context, job string) error
	// SetDraining marks a host drained (no new jobs) or not.
	SetDraining(ctx context.Context, host string, draining bool) error
	// Load returns every registered host's slots in use (by all builders)
	// and drain mark.
	Load(ctx context.Context) (map[string]Load, error)
	// Remember records that host built key (fleet/service) last.
	Remember(ctx context.Context, key, host string) error
	// Last returns the host that built key last ("" if none).
	Last(ctx context.Context, key string) (string, error)
	// FreeInstance gives back every slot instance holds (a run of it that
	// died). Reclaim gives back the slots of every instance not in live.
	FreeInstance(ctx context.Context, instance string) (int, error)
	Reclaim(ctx context.Context, live []string) (int, error)
}

// Slots is a host and how many jobs it runs at once.
type Slots struct {
	Host string
	Max  int
}

// Load is a host's state in the ledger.
type Load struct {
	Running  int
	Draining bool
}

// memoryLedger is the Ledger of builders with no database (tests): those
// made together share one memStore.
type memoryLedger struct {
	*memStore
	instance string
}

type memStore struct {
	mu       sync.Mutex
	hosts    map[string]*memHost
	jobs     map[string]memSlot
	affinity map[string]string
}

type memHost struct {
	max, running int
	draining     bool
}

type memSlot struct{ host, instance string }

// NewMemoryLedger returns a Ledger in memory; instance names its slots.
func NewMemoryLedger(instance string) Ledger { return NewMemoryLedgers(instance)[0] }

// NewMemoryLedgers returns one Ledger per instance, sharing their state as
// builders sharing a database do.
func NewMemoryLedgers(instances ...string) []Ledger {
	st := &memStore{hosts: map[string]*memHost{}, jobs: map[string]memSlot{}, affinity: map[string]string{}}
	out := make([]Ledger, len(instances))
	for i, in := range instances {
		out[i] = &memoryLedger{memStore: st, instance: in}
	}
	return out
}

func (m *memoryLedger) Register(_ context.Context, hosts []Slots) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range hosts {
		h, ok := m.hosts[s.Host]
		if !ok {
			h = &memHost{}
			m.hosts[s.Host] = h
		}
		h.max = s.Max
	}
	return nil
}

func (m *memoryLedger) Take(_ context.Context, job string, hosts []string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.jobs[job]; ok {
		return "", errSlotHeld(job)
	}
	for _, name := range hosts {
		h, ok := m.hosts[name]
		if ok && !h.draining && h.running < h.max {
			h.running++
			m.jobs[job] = memSlot{host: name, instance: m.instance}
			return name, nil
		}
	}
	return "", nil
}

func (m *memoryLedger) Give(_ context.Context, job string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.giveLocked(job)
	return nil
}

func (m *memStore) giveLocked(job string) {
	s, ok := m.jobs[job]
	if !ok {
		return
	}
	delete(m.jobs, job)
	if h, ok := m.hosts[s.host]; ok && h.running > 0 {
		h.running--
	}
}

func (m *memoryLedger) SetDraining(_ context.Context, host string, draining bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.hosts[host]
	if !ok {
		return errUnknownHost(host)
	}
	h.draining = draining
	return nil
}

func (m *memoryLedger) Load(context.Context) (map[string]Load, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Load, len(m.hosts))
	for n, h := range m.hosts {
		out[n] = Load{Running: h.running, Draining: h.draining}
	}
	return out, nil
}

func (m *memoryLedger) Remember(_ context.Context, key, host string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.affinity[key] = host
	return nil
}

func (m *memoryLedger) Last(_ context.Context, key string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.affinity[key], nil
}

func (m *memoryLedger) FreeInstance(_ context.Context, instance string) (int, error) {
	return m.freeWhere(func(s memSlot) bool { return s.instance == instance }), nil
}

func (m *memoryLedger) Reclaim(_ context.Context, live []string) (int, error) {
	alive := map[string]bool{}
	for _, l := range live {
		alive[l] = true
	}
	return m.freeWhere(func(s memSlot) bool { return !alive[s.instance] }), nil
}

func (m *memStore) freeWhere(match func(memSlot) bool) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for job, s := range m.jobs {
		if match(s) {
			m.giveLocked(job)
			n++
		}
	}
	return n
}
