// Package inflighttest is the contract every inflight.Store keeps, run
// against each implementation (SQLite in its package's tests, PostgreSQL
// in tests/store with a real server).
package inflighttest

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/services/ingest/inflight"
)

// RunContract checks s, which must be empty; reopen, when set, closes s
// and opens the same store again (the records must outlive the process).
func RunContract(t *testing.T, s inflight.Store, reopen func(t *testing.T) inflight.Store) {
	t.Helper()
	ctx := context.Background()
	t0 := time.Unix(1700000000, 123)
	a := inflight.Record{Owner: "one", BuildID: "7", ReleaseID: 7, ImageIDs: []int64{70, 71}, UserToken: "tok-a", Dir: "/data/builds/upload-a", Started: t0}
	b := inflight.Record{Owner: "one", BuildID: "8", ReleaseID: 8, ImageIDs: []int64{80}, UserToken: "tok-b", Dir: "/data/builds/upload-b", Started: t0.Add(time.Second)}
	if got, err := s.InFlight(ctx, "one"); err != nil || len(got) != 0 {
		t.Fatalf("a new store holds %v (%v)", got, err)
	}
	other := inflight.Record{Owner: "two", BuildID: "9", ReleaseID: 9, ImageIDs: []int64{}, UserToken: "tok-c", Dir: "/elsewhere", Started: t0}
	for _, r := range []inflight.Record{b, a, other} {
		if err := s.Begin(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Begin(ctx, a); err == nil {
		t.Error("a build recorded twice")
	}
	got, err := s.InFlight(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []inflight.Record{a, b}) {
		t.Errorf("InFlight(one) = %+v, want a then b", got)
	}
	if got, _ := s.InFlight(ctx, "two"); !reflect.DeepEqual(got, []inflight.Record{other}) {
		t.Errorf("InFlight(two) = %+v, want only its own", got)
	}
	if err := s.End(ctx, "7"); err != nil {
		t.Fatal(err)
	}
	if err := s.End(ctx, "nope"); err != nil {
		t.Errorf("End(unknown) = %v", err)
	}
	if got, _ := s.InFlight(ctx, "one"); !reflect.DeepEqual(got, []inflight.Record{b}) {
		t.Errorf("after End: %+v", got)
	}
	// A live instance takes over a dead one's builds.
	if ok, err := s.Claim(ctx, "9", "two", "three"); err != nil || !ok {
		t.Errorf("Claim(9, two, three) = %v, %v; want true", ok, err)
	}
	if ok, err := s.Claim(ctx, "9", "two", "four"); err != nil || ok {
		t.Errorf("a second claim of 9 = %v, %v; want false (three has it)", ok, err)
	}
	if got, _ := s.InFlight(ctx, "two"); len(got) != 0 {
		t.Errorf("after Claim the dead owner still has %+v", got)
	}
	other.Owner = "three"
	if got, _ := s.InFlight(ctx, "three"); !reflect.DeepEqual(got, []inflight.Record{other}) {
		t.Errorf("InFlight(three) = %+v, want the claimed build", got)
	}
	if ok, err := s.Claim(ctx, "8", "nobody", "three"); err != nil || ok {
		t.Errorf("Claim(8, nobody) = %v, %v", ok, err)
	}
	if reopen == nil {
		return
	}
	s = reopen(t)
	got, err = s.InFlight(ctx, "one")
	if err != nil || !reflect.DeepEqual(got, []inflight.Record{b}) {
		t.Errorf("after reopening: %+v %v", got, err)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}
