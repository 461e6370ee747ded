// Package inflight keeps, on disk, the builds a builder is running, so that
// a builder killed in the middle (kill -9, OOM, a host reboot) settles them
// when it starts again: their images and releases end failed instead of
// staying running in open-balena-api forever, and their uploads go.
//
// A record holds what settling needs: the release and image ids and the
// pushing user's token (open-balena-api has no builder key: only the user's
// token may PATCH the release). The record goes when the build ends, so a
// token stays on disk only while its build runs; the file is 0600 in the
// data dir.
package inflight

import (
	"context"
	"time"
)

// Record is one build in flight.
type Record struct {
	// Owner is the builder instance running it: a restarted builder
	// settles its own builds, not those other builders sharing the
	// database run.
	Owner     string
	BuildID   string
	ReleaseID int64
	ImageIDs  []int64
	UserToken string
	// Dir is the build's upload directory.
	Dir     string
	Started time.Time
}

// Store keeps the records. Implementations are safe for concurrent use.
type Store interface {
	// Begin records a build that starts.
	Begin(ctx context.Context, r Record) error
	// End forgets a build (ended, or settled after a restart). Ending an
	// unknown build is not an error.
	End(ctx context.Context, buildID string) error
	// InFlight lists owner's builds recorded and not ended, oldest first.
	InFlight(ctx context.Context, owner string) ([]Record, error)
	// Claim makes to the owner of build buildID if from owns it (a dead
	// instance's build, taken over by a live one to settle it); false when
	// from does not own it (any more: another instance claimed it first).
	Claim(ctx context.Context, buildID, from, to string) (bool, error)
	Close() error
}
