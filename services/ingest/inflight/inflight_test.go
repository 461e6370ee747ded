package inflight_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/open-balena-builder/builder/services/ingest/inflight"
	"github.com/open-balena-builder/builder/services/ingest/inflight/inflighttest"
)

func TestSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "obb.db")
	s, err := inflight.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	// The records outlive the process; migrations are not applied twice.
	inflighttest.RunContract(t, s, func(t *testing.T) inflight.Store {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2, err := inflight.OpenSQLite(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		return s2
	})
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the database holds tokens: mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
}

func TestSQLiteRefusesANewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "obb.db")
	s, err := inflight.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := inflight.SetSchemaVersion(s, 99); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := inflight.OpenSQLite(context.Background(), path); err == nil {
		t.Error("an older obb opened a newer schema")
	}
}
