package apistandin

import (
	"encoding/json"
	"time"
)

// Snapshots for test assertions. They are copies taken under the lock.
// Nullable text fields read "" when NULL; nullable dates and numbers are
// pointers; JSON fields are nil when NULL. Raw is the row exactly as
// GET /v7/<resource>(<id>) renders it (decoded JSON).

// Release is a release row.
type Release struct {
	ID, Application    int64
	Commit             string
	Composition        json.RawMessage
	Status, Source     string
	BuildLog           string
	StartTimestamp     time.Time
	EndTimestamp       *time.Time
	UpdateTimestamp    time.Time
	CreatedAt          time.Time
	IsFinal            bool
	IsFinalizedAt      *time.Time
	Revision           *int64
	Semver             string // computed "M.m.p[-pre][+build]"
	RawVersion         string
	Variant            string
	Contract           json.RawMessage
	Note               string
	KnownIssueList     string
	IsInvalidated      bool
	InvalidationReason string
	IsPassingTests     bool
	Raw                map[string]any
}

// Image is an image row.
type Image struct {
	ID, Service    int64
	Status         string
	Location       string // is_stored_at__image_location
	StartTimestamp time.Time
	EndTimestamp   *time.Time
	PushTimestamp  *time.Time
	ContentHash    string
	ImageSize      string // Big Integer, a decimal string as v7 renders it ("" when NULL)
	Dockerfile     string
	ProjectType    string
	ErrorMessage   string
	BuildLog       string
	Contract       json.RawMessage
	Raw            map[string]any
}

// Service is a service row.
type Service struct {
	ID, Application int64
	ServiceName     string
}

// ReleaseImage is an image__is_part_of__release row.
type ReleaseImage struct{ ID, Image, Release int64 }

// ImageLabel is an image_label row.
type ImageLabel struct {
	ID, ReleaseImage int64
	LabelName, Value string
}

// ImageEnvironmentVariable is an image_environment_variable row.
type ImageEnvironmentVariable struct {
	ID, ReleaseImage int64
	Name, Value      string
}

// ReleaseTag is a release_tag row.
type ReleaseTag struct {
	ID, Release   int64
	TagKey, Value string
}

func timePtr(r row, name string) *time.Time {
	if t, ok := r[name].(time.Time); ok {
		return &t
	}
	return nil
}

func intPtr(r row, name string) *int64 {
	if n, ok := r[name].(int64); ok {
		return &n
	}
	return nil
}

func rawJSON(r row, name string) json.RawMessage {
	if b, ok := r[name].(json.RawMessage); ok {
		return append(json.RawMessage(nil), b...)
	}
	return nil
}

func (s *Server) rawRow(table string, r row) map[string]any {
	c := &evalCtx{s: s, st: s.st}
	o, err := c.render(s.schema.tables[table], r, query{top: -1})
	if err != nil {
		return nil
	}
	b, _ := marshal(o)
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

func (s *Server) releaseOf(r row) Release {
	v := versionOf(r)
	start, _ := r["start_timestamp"].(time.Time)
	upd, _ := r["update_timestamp"].(time.Time)
	created, _ := r["created_at"].(time.Time)
	return Release{
		ID: r.id(), Application: r.int("belongs_to__application"), Commit: r.str("commit"),
		Composition: rawJSON(r, "composition"), Status: r.str("status"), Source: r.str("source"),
		BuildLog: r.str("build_log"), StartTimestamp: start, EndTimestamp: timePtr(r, "end_timestamp"),
		UpdateTimestamp: upd, CreatedAt: created, IsFinal: !r.isNull("revision"),
		IsFinalizedAt: timePtr(r, "is_finalized_at__date"), Revision: intPtr(r, "revision"),
		Semver: v.semver, RawVersion: v.raw, Variant: r.str("variant"), Contract: rawJSON(r, "contract"),
		Note: r.str("note"), KnownIssueList: r.str("known_issue_list"), IsInvalidated: r.boolean("is_invalidated"),
		InvalidationReason: r.str("invalidation_reason"), IsPassingTests: r.boolean("is_passing_tests"),
		Raw: s.rawRow("release", r),
	}
}

func (s *Server) imageOf(r row) Image {
	start, _ := r["start_timestamp"].(time.Time)
	size := ""
	if n := intPtr(r, "image_size"); n != nil {
		size = renderValue(field{kind: kBigInt}, *n).(string)
	}
	return Image{
		ID: r.id(), Service: r.int("is_a_build_of__service"), Status: r.str("status"),
		Location: r.str("is_stored_at__image_location"), StartTimestamp: start,
		EndTimestamp: timePtr(r, "end_timestamp"), PushTimestamp: timePtr(r, "push_timestamp"),
		ContentHash: r.str("content_hash"), ImageSize: size, Dockerfile: r.str("dockerfile"),
		ProjectType: r.str("project_type"), ErrorMessage: r.str("error_message"), BuildLog: r.str("build_log"),
		Contract: rawJSON(r, "contract"), Raw: s.rawRow("image", r),
	}
}

// Releases returns every release, by id.
func (s *Server) Releases() []Release {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Release
	for _, r := range s.st.rows("release") {
		out = append(out, s.releaseOf(r))
	}
	return out
}

// Release returns one release.
func (s *Server) Release(id int64) (Release, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.st.get("release", id)
	if !ok {
		return Release{}, false
	}
	return s.releaseOf(r), true
}

// Images returns every image, by id.
func (s *Server) Images() []Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Image
	for _, r := range s.st.rows("image") {
		out = append(out, s.imageOf(r))
	}
	return out
}

// Image returns one image.
func (s *Server) Image(id int64) (Image, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.st.get("image", id)
	if !ok {
		return Image{}, false
	}
	return s.imageOf(r), true
}

// Services returns every service, by id.
func (s *Server) Services() []Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Service
	for _, r := range s.st.rows("service") {
		out = append(out, Service{ID: r.id(), Application: r.int("application"), ServiceName: r.str("service_name")})
	}
	return out
}

// ReleaseImages returns every image__is_part_of__release row, by id.
func (s *Server) ReleaseImages() []ReleaseImage {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ReleaseImage
	for _, r := range s.st.rows("image__is_part_of__release") {
		out = append(out, ReleaseImage{ID: r.id(), Image: r.int("image"), Release: r.int("is_part_of__release")})
	}
	return out
}

// ImageLabels returns every image_label row, by id.
func (s *Server) ImageLabels() []ImageLabel {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ImageLabel
	for _, r := range s.st.rows("image_label") {
		out = append(out, ImageLabel{ID: r.id(), ReleaseImage: r.int("release_image"), LabelName: r.str("label_name"), Value: r.str("value")})
	}
	return out
}

// ImageEnvironmentVariables returns every image_environment_variable row, by id.
func (s *Server) ImageEnvironmentVariables() []ImageEnvironmentVariable {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ImageEnvironmentVariable
	for _, r := range s.st.rows("image_environment_variable") {
		out = append(out, ImageEnvironmentVariable{ID: r.id(), ReleaseImage: r.int("release_image"), Name: r.str("name"), Value: r.str("value")})
	}
	return out
}

// ReleaseTags returns every release_tag row, by id.
func (s *Server) ReleaseTags() []ReleaseTag {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ReleaseTag
	for _, r := range s.st.rows("release_tag") {
		out = append(out, ReleaseTag{ID: r.id(), Release: r.int("release"), TagKey: r.str("tag_key"), Value: r.str("value")})
	}
	return out
}

// FleetTarget returns the fleet's should_be_running__release; ok is false
// when the fleet does not exist or has no target.
func (s *Server) FleetTarget(fleetID int64) (releaseID int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	app, found := s.st.get("application", fleetID)
	if !found || app.isNull("should_be_running__release") {
		return 0, false
	}
	return app.int("should_be_running__release"), true
}
