package inflight

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// testStore is the contract every Store keeps.
func testStore(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := time.Unix(1700000000, 123)
	a := Record{BuildID: "7", ReleaseID: 7, ImageIDs: []int64{70, 71}, UserToken: "tok-a", Dir: "/data/builds/upload-a", Started: t0}
	b := Record{BuildID: "8", ReleaseID: 8, ImageIDs: []int64{80}, UserToken: "tok-b", Dir: "/data/builds/upload-b", Started: t0.Add(time.Second)}
	for _, r := range []Record{b, a} {
		if err := s.Begin(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Begin(ctx, a); err == nil {
		t.Error("a build recorded twice")
	}
	got, err := s.InFlight(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []Record{a, b}) {
		t.Errorf("InFlight = %+v, want a then b", got)
	}
	if err := s.End(ctx, "7"); err != nil {
		t.Fatal(err)
	}
	if err := s.End(ctx, "nope"); err != nil {
		t.Errorf("End(unknown) = %v", err)
	}
	if got, _ := s.InFlight(ctx); !reflect.DeepEqual(got, []Record{b}) {
		t.Errorf("after End: %+v", got)
	}
}

func TestSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "obb.db")
	s, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	testStore(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The records outlive the process; migrations are not applied twice.
	s, err = OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.InFlight(context.Background())
	if err != nil || len(got) != 1 || got[0].BuildID != "8" || got[0].UserToken != "tok-b" {
		t.Errorf("after reopening: %+v %v", got, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the database holds tokens: mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
}

func TestSQLiteRefusesANewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "obb.db")
	s, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := OpenSQLite(context.Background(), path); err == nil {
		t.Error("an older obb opened a newer schema")
	}
}
