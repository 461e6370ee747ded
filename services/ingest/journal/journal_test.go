package journal_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/open-balena-builder/builder/platform/sqlstore"
	"github.com/open-balena-builder/builder/services/ingest/journal"
	"github.com/open-balena-builder/builder/services/ingest/journal/journaltest"
)

func TestSQLite(t *testing.T) {
	db, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "obb.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	journaltest.RunContract(t, journal.New(db))
}
