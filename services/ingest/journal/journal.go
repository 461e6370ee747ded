// Package journal keeps builds as every builder sharing the database
// shows them: each build's view (fleet, user, state; protobuf bytes the
// journal does not read) and its events (the log), and the cancel requests
// another builder leaves for the one running a build. With SQLite it also
// keeps a builder's recent builds across its restarts.
package journal

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound means no build has that id.
var ErrNotFound = errors.New("build not found")

// Build is one build's row.
type Build struct {
	ID string
	// Owner is the builder instance running (or that ran) the build.
	Owner string
	// Fleet is the fleet's slug (who may see the build).
	Fleet    string
	Created  time.Time
	Finished time.Time // zero while it runs
	// View is the build as the API shows it (ingestv1.Build, marshalled).
	View []byte
}

// Event is one event of a build's log (buildv1.Event, marshalled), in
// order of Seq.
type Event struct {
	Seq  int64
	Data []byte
}

// Store keeps the journal. Implementations are safe for concurrent use.
type Store interface {
	// Save records b, or its new state (the owner's cancel request stays).
	Save(ctx context.Context, b Build) error
	// Get returns a build or ErrNotFound.
	Get(ctx context.Context, id string) (Build, error)
	// List returns the newest builds, at most limit.
	List(ctx context.Context, limit int) ([]Build, error)
	// Unfinished lists owner's builds that have not finished.
	Unfinished(ctx context.Context, owner string) ([]Build, error)
	// Claim makes to the owner of build id if from owns it and it has not
	// finished; false otherwise.
	Claim(ctx context.Context, id, from, to string) (bool, error)
	// Append adds events; an event whose Seq is recorded already is
	// ignored.
	Append(ctx context.Context, id string, events []Event) error
	// Events returns up to limit events after seq after, in order.
	Events(ctx context.Context, id string, after int64, limit int) ([]Event, error)
	// RequestCancel leaves a cancel request for the build's owner; false
	// when the build is unknown or finished.
	RequestCancel(ctx context.Context, id, reason string) (bool, error)
	// CancelRequests returns owner's running builds someone asked to
	// cancel, with the reason.
	CancelRequests(ctx context.Context, owner string) (map[string]string, error)
	// Prune removes the finished builds but the newest keep, and their
	// events; it returns how many builds went.
	Prune(ctx context.Context, keep int) (int, error)
}
