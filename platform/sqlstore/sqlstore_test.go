package sqlstore

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
)

// Processes of one builder (services run separately) open the data dir's
// database at once: the schema is migrated once, and every one opens it.
func TestSQLiteMigratesOnceUnderConcurrentOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "obb.db")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := OpenSQLite(context.Background(), path)
			if err == nil {
				err = db.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	db, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil || v != SchemaVersion() {
		t.Errorf("user_version = %d (%v), want %d", v, err, SchemaVersion())
	}
}

func TestSQLiteRefusesANewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "obb.db")
	db, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA user_version = 999`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := OpenSQLite(context.Background(), path); err == nil {
		t.Error("an older obb opened a newer schema")
	}
}
