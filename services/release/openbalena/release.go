package openbalena

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Release statuses as the API spells them.
const (
	StatusRunning   = "running"
	StatusSuccess   = "success"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// NewRelease is what CreateRelease records.
type NewRelease struct {
	FleetID int64
	// Composition is the normalized compose object; nil is sent as {}.
	Composition map[string]any
	// Draft releases are created with is_final false: they never become
	// the fleet target until finalized.
	Draft bool
	// Contract is the root balena.yml (nil: none) and Semver its version.
	Contract map[string]any
	Semver   string
}

// Release is the part of a release row the builder reads.
type Release struct {
	ID      int64  `json:"id"`
	Commit  string `json:"commit"`
	Status  string `json:"status"`
	IsFinal bool   `json:"is_final"`
}

// CreateRelease POSTs a running cloud release with a new random commit.
func (c *Client) CreateRelease(ctx context.Context, token string, r NewRelease) (Release, error) {
	commit, err := newCommit()
	if err != nil {
		return Release{}, err
	}
	comp := r.Composition
	if comp == nil {
		comp = map[string]any{}
	}
	body := map[string]any{
		"belongs_to__application": r.FleetID,
		"commit":                  commit,
		"composition":             comp,
		"status":                  StatusRunning,
		"source":                  "cloud",
		"start_timestamp":         epochMS(c.now()),
		"is_final":                !r.Draft,
	}
	if r.Contract != nil {
		body["contract"] = r.Contract
	}
	if r.Semver != "" {
		body["semver"] = r.Semver
	}
	var out Release
	if err := c.do(ctx, call{method: http.MethodPost, path: "/v7/release", body: body, creds: bearer(token)}, &out); err != nil {
		return Release{}, err
	}
	if out.ID == 0 {
		return Release{}, fmt.Errorf("open-balena-api POST /v7/release: answer has no id")
	}
	if out.Commit == "" {
		out.Commit = commit
	}
	return out, nil
}

// GetRelease reads a release's id, commit, status and is_final.
func (c *Client) GetRelease(ctx context.Context, token string, id int64) (Release, error) {
	var rows list[Release]
	err := c.do(ctx, call{
		method: http.MethodGet,
		path:   "/v7/release(" + strconv.FormatInt(id, 10) + ")",
		query:  []param{{"$select", "id,commit,status,is_final"}},
		creds:  bearer(token),
	}, &rows)
	if err != nil {
		return Release{}, err
	}
	if len(rows.D) == 0 {
		return Release{}, fmt.Errorf("release %d: %w", id, ErrNotFound)
	}
	return rows.D[0], nil
}

// ReleasePatch changes a release. Zero fields are not sent.
type ReleasePatch struct {
	Status       string
	EndTimestamp time.Time
	IsFinal      *bool
	// UnlessStatus, when set, makes the PATCH apply only while the release
	// does not have that status ($filter=status ne '<x>'): a user's cancel
	// is never overwritten. Like every PATCH, a filtered-out one answers 200.
	UnlessStatus string
	// IfStatus, when set, applies the PATCH only while the release has it.
	IfStatus string
}

// PatchRelease PATCHes /v7/release(<id>).
func (c *Client) PatchRelease(ctx context.Context, token string, id int64, p ReleasePatch) error {
	body := map[string]any{}
	if p.Status != "" {
		body["status"] = p.Status
	}
	if !p.EndTimestamp.IsZero() {
		body["end_timestamp"] = epochMS(p.EndTimestamp)
	}
	if p.IsFinal != nil {
		body["is_final"] = *p.IsFinal
	}
	var conds []string
	if p.UnlessStatus != "" {
		conds = append(conds, "status ne "+quote(p.UnlessStatus))
	}
	if p.IfStatus != "" {
		conds = append(conds, "status eq "+quote(p.IfStatus))
	}
	var query []param
	if len(conds) > 0 {
		query = []param{{"$filter", strings.Join(conds, " and ")}}
	}
	return c.do(ctx, call{
		method: http.MethodPatch,
		path:   "/v7/release(" + strconv.FormatInt(id, 10) + ")",
		query:  query,
		body:   body,
		creds:  bearer(token),
	}, nil)
}

// newCommit is what balena-cli uses: 32 random lowercase hex digits.
func newCommit() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("release commit: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
