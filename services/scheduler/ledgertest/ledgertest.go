// Package ledgertest is the contract every scheduler.Ledger keeps, run
// against each implementation: in memory and SQLite in the scheduler's
// tests, PostgreSQL in tests/store with a real server.
package ledgertest

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/open-balena-builder/builder/services/scheduler"
)

// Open returns two ledgers on one empty store, for the instances "a" and
// "b" (two builders sharing the database).
type Open func(t *testing.T) (a, b scheduler.Ledger)

// RunContract runs every case, each on a fresh store from open.
func RunContract(t *testing.T, open Open) {
	t.Run("SlotsInOrder", func(t *testing.T) { slotsInOrder(t, open) })
	t.Run("Draining", func(t *testing.T) { draining(t, open) })
	t.Run("SharedAcrossInstances", func(t *testing.T) { shared(t, open) })
	t.Run("Reclaim", func(t *testing.T) { reclaim(t, open) })
	t.Run("Affinity", func(t *testing.T) { affinity(t, open) })
	t.Run("ConcurrentTakesKeepMax", func(t *testing.T) { concurrent(t, open) })
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func take(t *testing.T, l scheduler.Ledger, job string, hosts ...string) string {
	t.Helper()
	h, err := l.Take(context.Background(), job, hosts)
	must(t, err)
	return h
}

func load(t *testing.T, l scheduler.Ledger) map[string]scheduler.Load {
	t.Helper()
	m, err := l.Load(context.Background())
	must(t, err)
	return m
}

func slotsInOrder(t *testing.T, open Open) {
	ctx := context.Background()
	a, _ := open(t)
	must(t, a.Register(ctx, []scheduler.Slots{{Host: "h1", Max: 2}, {Host: "h2", Max: 1}}))
	for i, want := range []string{"h1", "h1", "h2", ""} {
		if got := take(t, a, fmt.Sprintf("j%d", i+1), "h1", "h2"); got != want {
			t.Errorf("take %d = %q, want %q", i+1, got, want)
		}
	}
	if got := take(t, a, "x", "h2", "h1"); got != "" {
		t.Errorf("a full pool gave %q", got)
	}
	if got := load(t, a); got["h1"].Running != 2 || got["h2"].Running != 1 {
		t.Errorf("load = %+v, want h1 2, h2 1", got)
	}
	must(t, a.Give(ctx, "j1"))
	must(t, a.Give(ctx, "j1")) // twice: no error, no second slot
	must(t, a.Give(ctx, "never"))
	if got := load(t, a); got["h1"].Running != 1 {
		t.Errorf("after giving j1 back twice: h1 runs %d, want 1", got["h1"].Running)
	}
	if got := take(t, a, "j4", "h2", "h1"); got != "h1" {
		t.Errorf("the freed slot: got %q, want h1", got)
	}
	if got := take(t, a, "j5", "nowhere"); got != "" {
		t.Errorf("an unregistered host gave a slot: %q", got)
	}
	// Registering again (a heartbeat) keeps the slots in use.
	must(t, a.Register(ctx, []scheduler.Slots{{Host: "h1", Max: 3}}))
	if got := load(t, a); got["h1"].Running != 2 {
		t.Errorf("after a heartbeat h1 runs %d, want 2", got["h1"].Running)
	}
	if _, err := a.Take(ctx, "j4", []string{"h1", "h2"}); err == nil {
		t.Error("a job took a second slot")
	}
	if got := take(t, a, "j6", "h1"); got != "h1" {
		t.Errorf("max_concurrent raised to 3: got %q", got)
	}
}

func draining(t *testing.T, open Open) {
	ctx := context.Background()
	a, b := open(t)
	must(t, a.Register(ctx, []scheduler.Slots{{Host: "h1", Max: 2}, {Host: "h2", Max: 2}}))
	must(t, a.SetDraining(ctx, "h1", true))
	if got := take(t, b, "j1", "h1", "h2"); got != "h2" {
		t.Errorf("a drained host took a job: %q", got)
	}
	if got := load(t, b); !got["h1"].Draining || got["h2"].Draining {
		t.Errorf("the drain is not every builder's: %+v", got)
	}
	if err := a.SetDraining(ctx, "nope", true); err == nil {
		t.Error("drained an unknown host")
	}
	must(t, b.SetDraining(ctx, "h1", false))
	if got := take(t, a, "j2", "h1", "h2"); got != "h1" {
		t.Errorf("a resumed host: got %q", got)
	}
}

func shared(t *testing.T, open Open) {
	ctx := context.Background()
	a, b := open(t)
	must(t, a.Register(ctx, []scheduler.Slots{{Host: "h", Max: 1}}))
	must(t, b.Register(ctx, []scheduler.Slots{{Host: "h", Max: 1}}))
	if got := take(t, a, "a1", "h"); got != "h" {
		t.Fatalf("a: %q", got)
	}
	if got := take(t, b, "b1", "h"); got != "" {
		t.Errorf("b took a slot a holds: max_concurrent 1 broken")
	}
	must(t, a.Give(ctx, "a1"))
	if got := take(t, b, "b1", "h"); got != "h" {
		t.Errorf("b after a gave back: %q", got)
	}
}

func reclaim(t *testing.T, open Open) {
	ctx := context.Background()
	a, b := open(t)
	must(t, a.Register(ctx, []scheduler.Slots{{Host: "h", Max: 2}, {Host: "g", Max: 1}}))
	take(t, a, "a1", "h")
	take(t, a, "a2", "g")
	take(t, b, "b1", "h")
	n, err := b.Reclaim(ctx, []string{"b"}) // a is dead
	must(t, err)
	if n != 2 {
		t.Errorf("reclaimed %d slots, want a's 2", n)
	}
	if got := load(t, b); got["h"].Running != 1 || got["g"].Running != 0 {
		t.Errorf("after reclaiming a: %+v, want h 1 (b's), g 0", got)
	}
	if n, _ := b.Reclaim(ctx, []string{"b"}); n != 0 {
		t.Errorf("reclaimed %d twice", n)
	}
	// A builder restarted under its own name frees what its last run held.
	n, err = b.FreeInstance(ctx, "b")
	must(t, err)
	if n != 1 || load(t, a)["h"].Running != 0 {
		t.Errorf("FreeInstance(b) = %d, load %+v", n, load(t, a))
	}
	if got := take(t, a, "a3", "g"); got != "g" {
		t.Errorf("a reclaimed slot: %q", got)
	}
}

func affinity(t *testing.T, open Open) {
	ctx := context.Background()
	a, b := open(t)
	if h, err := a.Last(ctx, "org/f/main"); err != nil || h != "" {
		t.Errorf("Last of nothing = %q, %v", h, err)
	}
	must(t, a.Remember(ctx, "org/f/main", "h1"))
	must(t, b.Remember(ctx, "org/f/main", "h2"))
	must(t, a.Remember(ctx, "org/g/main", "h3"))
	if h, _ := a.Last(ctx, "org/f/main"); h != "h2" {
		t.Errorf("Last = %q, want what b recorded last (h2)", h)
	}
	if h, _ := b.Last(ctx, "org/g/main"); h != "h3" {
		t.Errorf("Last(g) = %q", h)
	}
}

func concurrent(t *testing.T, open Open) {
	ctx := context.Background()
	a, b := open(t)
	must(t, a.Register(ctx, []scheduler.Slots{{Host: "h", Max: 3}, {Host: "g", Max: 2}}))
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	for i := range 40 {
		l := a
		if i%2 == 1 {
			l = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := l.Take(ctx, fmt.Sprintf("c%d", i), []string{"h", "g"})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			got[h]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if got["h"] != 3 || got["g"] != 2 || got[""] != 35 {
		t.Errorf("40 concurrent takes: %v, want h 3, g 2, none 35", got)
	}
	if l := load(t, b); l["h"].Running != 3 || l["g"].Running != 2 {
		t.Errorf("load after the race: %+v", l)
	}
}
