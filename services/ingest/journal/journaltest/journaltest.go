// Package journaltest is the contract every journal.Store keeps, run
// against SQLite in the journal's tests and PostgreSQL in tests/store.
package journaltest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/services/ingest/journal"
)

// RunContract checks s, which must be empty.
func RunContract(t *testing.T, s journal.Store) {
	t.Helper()
	ctx := context.Background()
	t0 := time.Unix(1700000000, 0)
	if _, err := s.Get(ctx, "1"); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Get on an empty journal: %v, want ErrNotFound", err)
	}
	a := journal.Build{ID: "1", Owner: "one", Fleet: "org/f", Created: t0, View: []byte("running")}
	b := journal.Build{ID: "2", Owner: "one", Fleet: "org/g", Created: t0.Add(time.Second), View: []byte{0, 1, 2}}
	c := journal.Build{ID: "3", Owner: "two", Fleet: "org/f", Created: t0.Add(2 * time.Second), View: []byte("x")}
	for _, x := range []journal.Build{a, b, c} {
		if err := s.Save(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Get(ctx, "2")
	if err != nil || !reflect.DeepEqual(got, b) {
		t.Errorf("Get(2) = %+v, %v; want %+v", got, err, b)
	}
	a.View, a.Finished = []byte("succeeded"), t0.Add(time.Minute)
	if err := s.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, "1"); !reflect.DeepEqual(got, a) {
		t.Errorf("after an update: %+v", got)
	}
	list, err := s.List(ctx, 2)
	if err != nil || len(list) != 2 || list[0].ID != "3" || list[1].ID != "2" {
		t.Errorf("List(2) = %+v, %v; want 3, 2", list, err)
	}
	if un, _ := s.Unfinished(ctx, "one"); len(un) != 1 || un[0].ID != "2" {
		t.Errorf("Unfinished(one) = %+v, want 2", un)
	}

	// Events: in order, from a sequence number, duplicates ignored.
	var evs []journal.Event
	for i := int64(1); i <= 450; i++ {
		evs = append(evs, journal.Event{Seq: i, Data: []byte(fmt.Sprintf("e%d", i))})
	}
	if err := s.Append(ctx, "2", evs[:300]); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, "2", evs[290:]); err != nil {
		t.Fatalf("appending events recorded already: %v", err)
	}
	got2, err := s.Events(ctx, "2", 0, 1000)
	if err != nil || len(got2) != 450 || got2[0].Seq != 1 || string(got2[449].Data) != "e450" {
		t.Fatalf("Events = %d events (%v)", len(got2), err)
	}
	if tail, _ := s.Events(ctx, "2", 448, 10); len(tail) != 2 || tail[0].Seq != 449 {
		t.Errorf("Events after 448 = %+v", tail)
	}
	if none, _ := s.Events(ctx, "1", 0, 10); len(none) != 0 {
		t.Errorf("another build's events: %+v", none)
	}

	// Cancel requests reach the owner of a running build only.
	if ok, err := s.RequestCancel(ctx, "2", "cancelled by user: stop"); err != nil || !ok {
		t.Errorf("RequestCancel(2) = %v, %v", ok, err)
	}
	if ok, _ := s.RequestCancel(ctx, "2", "again"); !ok {
		t.Error("a second request on a running build said no")
	}
	if ok, _ := s.RequestCancel(ctx, "1", "late"); ok {
		t.Error("cancelled a finished build")
	}
	if ok, _ := s.RequestCancel(ctx, "nope", "x"); ok {
		t.Error("cancelled an unknown build")
	}
	reqs, err := s.CancelRequests(ctx, "one")
	if err != nil || !reflect.DeepEqual(reqs, map[string]string{"2": "cancelled by user: stop"}) {
		t.Errorf("CancelRequests(one) = %v, %v", reqs, err)
	}
	if reqs, _ := s.CancelRequests(ctx, "two"); len(reqs) != 0 {
		t.Errorf("CancelRequests(two) = %v", reqs)
	}
	// A later Save by the owner keeps the request.
	if err := s.Save(ctx, b); err != nil {
		t.Fatal(err)
	}
	if reqs, _ := s.CancelRequests(ctx, "one"); len(reqs) != 1 {
		t.Errorf("a save lost the cancel request: %v", reqs)
	}

	// A live instance takes over a dead one's running build, once.
	if ok, err := s.Claim(ctx, "3", "two", "one"); err != nil || !ok {
		t.Errorf("Claim(3) = %v, %v", ok, err)
	}
	if ok, _ := s.Claim(ctx, "3", "two", "four"); ok {
		t.Error("claimed twice")
	}
	if ok, _ := s.Claim(ctx, "1", "one", "four"); ok {
		t.Error("claimed a finished build")
	}
	if un, _ := s.Unfinished(ctx, "one"); len(un) != 2 {
		t.Errorf("Unfinished(one) after the claim = %+v", un)
	}

	// Prune keeps the newest and every running build.
	for i := 10; i < 20; i++ {
		x := journal.Build{ID: fmt.Sprint(i), Owner: "one", Fleet: "org/f", Created: t0.Add(time.Duration(i) * time.Minute),
			Finished: t0.Add(time.Hour), View: []byte("done")}
		if err := s.Save(ctx, x); err != nil {
			t.Fatal(err)
		}
		if err := s.Append(ctx, x.ID, evs[:3]); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.Prune(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := s.List(ctx, 100)
	ids := map[string]bool{}
	for _, x := range all {
		ids[x.ID] = true
	}
	// 13 builds: 15..19 are the newest five; 1 and 10..14 are finished and older; 2, 3 run.
	if n != 6 || len(all) != 7 || !ids["19"] || !ids["15"] || ids["14"] || ids["1"] || !ids["2"] || !ids["3"] {
		t.Errorf("Prune(5) removed %d, left %v", n, ids)
	}
	if evs, _ := s.Events(ctx, "10", 0, 10); len(evs) != 0 {
		t.Errorf("a pruned build's events stay: %d", len(evs))
	}
	if evs, _ := s.Events(ctx, "19", 0, 10); len(evs) != 3 {
		t.Errorf("a kept build lost its events: %d", len(evs))
	}
}
