package release

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	"github.com/open-balena-builder/builder/services/release/delta"
)

// deltaStream collects CreateDeltas' lines.
type deltaStream struct {
	ctx   context.Context
	mu    sync.Mutex
	lines []*releasev1.CreateDeltasResponse
}

func (d *deltaStream) Context() context.Context     { return d.ctx }
func (d *deltaStream) SetHeader(metadata.MD) error  { return nil }
func (d *deltaStream) SendHeader(metadata.MD) error { return nil }
func (d *deltaStream) SetTrailer(metadata.MD)       {}
func (d *deltaStream) SendMsg(any) error            { return nil }
func (d *deltaStream) RecvMsg(any) error            { return nil }
func (d *deltaStream) Send(r *releasev1.CreateDeltasResponse) error {
	d.mu.Lock()
	d.lines = append(d.lines, r)
	d.mu.Unlock()
	return nil
}

func (d *deltaStream) text() string {
	var out []string
	for _, l := range d.lines {
		tag := "info"
		if l.GetWarning() {
			tag = "warn"
		}
		out = append(out, tag+": "+readyIn.ReplaceAllString(l.GetLine(), "ready in <time>"))
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

// deltaServer is open-balena-delta as its code answers: GET
// /api/v3/delta?src&dest&wait=true with a Bearer registry token, 200
// {"name": "<registry>/v2/<dest hash>:delta-<src hash[:16]>"}; answer
// picks a status for a service's request (by dest) when set.
type deltaServer struct {
	t       *testing.T
	mu      sync.Mutex
	reqs    []url2
	running atomic.Int32
	peak    atomic.Int32
	answer  func(dest string) int
	hold    time.Duration
}

type url2 struct{ src, dest string }

func (d *deltaServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := d.running.Add(1)
	defer d.running.Add(-1)
	for p := d.peak.Load(); n > p && !d.peak.CompareAndSwap(p, n); p = d.peak.Load() {
	}
	q := r.URL.Query()
	src, dest := q.Get("src"), q.Get("dest")
	d.mu.Lock()
	d.reqs = append(d.reqs, url2{src, dest})
	d.mu.Unlock()
	if r.URL.Path != "/api/v3/delta" || q.Get("wait") != "true" {
		d.t.Errorf("delta request %s", r.URL)
	}
	// The token must give pull on both repositories, named without the
	// registry host (the API's scope parser drops a host prefix).
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	access := claims(d.t, tok)
	for _, ref := range []string{src, dest} {
		repo := strings.TrimPrefix(strings.SplitN(ref, "@", 2)[0], testRegistry+"/")
		if !slices.Contains(access[repo], "pull") {
			d.t.Errorf("token has no pull on %s: %v", repo, access)
		}
		if slices.Contains(access[repo], "push") {
			d.t.Errorf("token has push on %s: the delta server needs only pull", repo)
		}
	}
	time.Sleep(d.hold)
	if d.answer != nil {
		if code := d.answer(dest); code != http.StatusOK {
			http.Error(w, "Error: failed to create delta", code)
			return
		}
	}
	srcHash := strings.TrimPrefix(strings.SplitN(src, "@", 2)[0], testRegistry+"/v2/")
	json.NewEncoder(w).Encode(map[string]string{"name": strings.SplitN(dest, "@", 2)[0] + ":delta-" + srcHash[:16]})
}

// claims reads a registry token's access: repository → actions.
func claims(t *testing.T, tok string) map[string][]string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Errorf("not a JWT: %q", tok)
		return nil
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c struct {
		Access []struct {
			Name    string   `json:"name"`
			Actions []string `json:"actions"`
		} `json:"access"`
	}
	json.Unmarshal(raw, &c)
	out := map[string][]string{}
	for _, a := range c.Access {
		out[a.Name] = a.Actions
	}
	return out
}

// twoServices creates a release of main and worker, both pushed with the
// given digests (one per service), finished with status.
func (h *harness) twoServices(t *testing.T, digests map[string]string, st releasev1.Status) *releasev1.CreateReleaseResponse {
	t.Helper()
	ctx := context.Background()
	comp := defaultComposition(t)
	comp.Fields["services"].GetStructValue().Fields["worker"] = comp.Fields["services"].GetStructValue().Fields["main"]
	resp, err := h.srv.CreateRelease(ctx, &releasev1.CreateReleaseRequest{UserToken: h.key, FleetId: h.fleet.ID, Composition: comp,
		Services: []*releasev1.ServiceImage{{Service: "main"}, {Service: "worker"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range resp.GetImages() {
		if _, err := h.srv.FinishImage(ctx, &releasev1.FinishImageRequest{UserToken: h.key, ImageId: img.GetImageId(),
			Status: releasev1.Status_STATUS_SUCCESS, ContentHash: digests[img.GetService()], ImageSize: 1000}); err != nil {
			t.Fatal(err)
		}
	}
	if st != releasev1.Status_STATUS_UNSPECIFIED {
		if _, err := h.srv.FinishRelease(ctx, &releasev1.FinishReleaseRequest{UserToken: h.key, ReleaseId: resp.GetReleaseId(), Status: st}); err != nil {
			t.Fatal(err)
		}
	}
	return resp
}

var readyIn = regexp.MustCompile(`ready in [0-9.]+[a-zµ]*s`)

func digest(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }

func TestCreateDeltas(t *testing.T) {
	tests := []struct {
		name    string
		first   bool              // no target release yet
		next    map[string]string // the new release's digests
		answer  func(dest string) int
		timeout time.Duration
		hold    time.Duration
		want    string
		reqs    int
	}{
		{name: "first release: nothing to make", first: true, want: ""},
		{name: "both services changed: two deltas at once", next: map[string]string{"main": digest('c'), "worker": digest('d')}, reqs: 2, hold: 100 * time.Millisecond,
			want: "info: Creating image deltas for main, worker...\ninfo: Delta for main ready in <time>\ninfo: Delta for worker ready in <time>"},
		{name: "unchanged service skipped", next: map[string]string{"main": digest('c'), "worker": digest('b')}, reqs: 1,
			want: "info: Creating image deltas for main...\ninfo: Delta for main ready in <time>"},
		{name: "a failure is a warning", next: map[string]string{"main": digest('c'), "worker": digest('d')}, reqs: 2,
			answer: func(dest string) int {
				if strings.HasSuffix(dest, digest('d')) {
					return http.StatusBadRequest
				}
				return http.StatusOK
			},
			want: "info: Creating image deltas for main, worker...\ninfo: Delta for main ready in <time>\nwarn: Delta for worker not made: delta server: 400 Error: failed to create delta; devices will ask for it on demand"},
		{name: "bounded wait", next: map[string]string{"main": digest('c'), "worker": digest('b')}, reqs: 1, timeout: 50 * time.Millisecond, hold: time.Second,
			want: "info: Creating image deltas for main...\nwarn: Delta for main not made: no delta after 50ms (OBB_DELTA_TIMEOUT); devices will ask for it on demand"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, "genericx86-64-ext", nil)
			ds := &deltaServer{t: t, answer: tt.answer, hold: tt.hold}
			hs := httptest.NewServer(ds)
			defer hs.Close()
			dc, err := delta.New(hs.URL, hs.Client())
			if err != nil {
				t.Fatal(err)
			}
			h.srv.cfg.Deltas, h.srv.cfg.DeltaTimeout = dc, DefaultDeltaTimeout
			if tt.timeout > 0 {
				h.srv.cfg.DeltaTimeout = tt.timeout
			}
			var next *releasev1.CreateReleaseResponse
			if tt.first {
				next = h.twoServices(t, map[string]string{"main": digest('a'), "worker": digest('b')}, releasev1.Status_STATUS_UNSPECIFIED)
			} else {
				old := h.twoServices(t, map[string]string{"main": digest('a'), "worker": digest('b')}, releasev1.Status_STATUS_SUCCESS)
				if target, _ := h.api.FleetTarget(h.fleet.ID); target != old.GetReleaseId() {
					t.Fatalf("the first release is not the target")
				}
				next = h.twoServices(t, tt.next, releasev1.Status_STATUS_UNSPECIFIED)
			}
			st := &deltaStream{ctx: context.Background()}
			if err := h.srv.CreateDeltas(&releasev1.CreateDeltasRequest{UserToken: h.key, FleetId: h.fleet.ID, ReleaseId: next.GetReleaseId()}, st); err != nil {
				t.Fatal(err)
			}
			if got := st.text(); got != tt.want {
				t.Errorf("lines:\n%s\nwant:\n%s", got, tt.want)
			}
			hs.Close() // the handlers have returned
			ds.mu.Lock()
			defer ds.mu.Unlock()
			if len(ds.reqs) != tt.reqs {
				t.Errorf("%d delta requests, want %d", len(ds.reqs), tt.reqs)
			}
			if tt.reqs == 2 && tt.hold > 0 && ds.peak.Load() != 2 {
				t.Errorf("deltas ran one at a time (peak %d), want in parallel", ds.peak.Load())
			}
			for _, r := range ds.reqs {
				if !strings.HasPrefix(r.src, testRegistry+"/v2/") || !strings.Contains(r.src, "@sha256:") || !strings.Contains(r.dest, "@sha256:") {
					t.Errorf("request src=%q dest=%q", r.src, r.dest)
				}
			}
		})
	}
}

func TestCreateDeltasWithoutDeltaHostSaysNothing(t *testing.T) {
	h := newHarness(t, "genericx86-64-ext", nil)
	st := &deltaStream{ctx: context.Background()}
	if err := h.srv.CreateDeltas(&releasev1.CreateDeltasRequest{UserToken: h.key, FleetId: h.fleet.ID, ReleaseId: 1}, st); err != nil || len(st.lines) != 0 {
		t.Errorf("err %v, lines %v", err, st.lines)
	}
}
