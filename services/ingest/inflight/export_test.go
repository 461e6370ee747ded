package inflight

import "strconv"

// SetSchemaVersion sets a SQLite store's schema version (for tests).
func SetSchemaVersion(s *SQL, v int) error {
	_, err := s.db.Exec(`PRAGMA user_version = ` + strconv.Itoa(v))
	return err
}
