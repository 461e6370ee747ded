package openbalena

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/open-balena-builder/builder/internal/apistandin"
)

// TestGetOrCreateServiceRace: two pushes to one fleet both find no
// service, both POST it; the loser's 409 is answered by reading the
// winner's row.
func TestGetOrCreateServiceRace(t *testing.T) {
	api, err := apistandin.New(apistandin.Config{RegistryHost: "127.0.0.1:5000", Issuer: "api.balena.local"})
	if err != nil {
		t.Fatal(err)
	}
	key := api.AddUser("admin")
	fleet := api.AddFleet("admin", "racefleet", "genericx86-64-ext")

	// Hold the first two service lookups until both arrived, so both
	// goroutines see "absent" before either creates it.
	var (
		arrived sync.WaitGroup
		lookups atomic.Int32
		posts   atomic.Int32
	)
	arrived.Add(2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v7/service(") && lookups.Add(1) <= 2 {
			arrived.Done()
			arrived.Wait()
		}
		if r.Method == http.MethodPost && r.URL.Path == "/v7/service" {
			posts.Add(1)
		}
		api.ServeHTTP(w, r)
	}))
	defer srv.Close()
	c := New(srv.URL, srv.Client(), nil, fastRetry())

	var ids [2]int64
	var errs [2]error
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() { ids[i], errs[i] = c.GetOrCreateService(context.Background(), key, fleet.ID, "main") })
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
	}
	if ids[0] != ids[1] || ids[0] == 0 {
		t.Errorf("ids = %v, want one service", ids)
	}
	if n := len(api.Services()); n != 1 {
		t.Errorf("%d services", n)
	}
	if posts.Load() != 2 {
		t.Errorf("%d POSTs: the race was not exercised", posts.Load())
	}
	// A third call finds it without a POST.
	if id, err := c.GetOrCreateService(context.Background(), key, fleet.ID, "main"); err != nil || id != ids[0] {
		t.Errorf("third call = %d, %v", id, err)
	}
	if posts.Load() != 2 {
		t.Error("an existing service was POSTed again")
	}
}

func TestStandInShapes(t *testing.T) {
	api, err := apistandin.New(apistandin.Config{RegistryHost: "127.0.0.1:5000", Issuer: "api.balena.local"})
	if err != nil {
		t.Fatal(err)
	}
	key := api.AddUser("admin")
	fleet := api.AddFleet("admin", "shape_fleet", "raspberrypi4-64")
	srv := httptest.NewServer(api)
	defer srv.Close()
	c := New(srv.URL, srv.Client(), nil, fastRetry())
	ctx := context.Background()

	f, err := c.FleetBySlug(ctx, key, fleet.Slug)
	if err != nil {
		t.Fatal(err)
	}
	if f.ID != fleet.ID || f.Arch != "aarch64" || f.DeviceType != "raspberrypi4-64" || f.AppName != "shape_fleet" {
		t.Errorf("fleet = %+v", f)
	}
	if _, err := c.FleetBySlug(ctx, "bad", fleet.Slug); err == nil {
		t.Error("an unknown token read the fleet")
	}
	if _, err := c.WhoAmI(ctx, "bad"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("whoami bad token: %v", err)
	}
	rel, err := c.CreateRelease(ctx, key, NewRelease{FleetID: fleet.ID, Draft: true, Semver: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if rel.Status != StatusRunning || rel.IsFinal || len(rel.Commit) != 32 {
		t.Errorf("release = %+v", rel)
	}
	got, err := c.GetRelease(ctx, key, rel.ID)
	if err != nil || got != rel {
		t.Errorf("GetRelease = %+v, %v; want %+v", got, err, rel)
	}
}
