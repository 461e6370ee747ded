package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
	"github.com/open-balena-builder/builder/services/ingest/gateway"
)

// The operator commands talk to the admin listener's REST API with the
// operator token:
//
//	obb builds ls | show ID | logs [-f] ID | cancel [--reason R] ID
//	obb hosts ls | drain NAME | resume NAME
//
// --admin (OBB_ADMIN_ADDR, 127.0.0.1:9100) and --token (OBB_ADMIN_TOKEN,
// else the admin-token file of --data-dir / OBB_DATA_DIR) say where and
// who; -o json prints the API's JSON for scripts.

func opsUsage() error {
	return errors.New(`usage:
  obb builds ls [-n N] | show ID | logs [-f] ID | cancel [--reason TEXT] ID
  obb hosts ls | drain NAME | resume NAME
flags (before the command's arguments):
  --admin ADDR    the operator surface (OBB_ADMIN_ADDR, default 127.0.0.1:9100)
  --token TOKEN   the operator token (OBB_ADMIN_TOKEN, else <data dir>/admin-token)
  --data-dir DIR  where admin-token is (OBB_DATA_DIR, default /var/lib/obb)
  -o table|json   output (default table)`)
}

// opsClient calls the admin REST API.
type opsClient struct {
	base   string
	token  string
	http   *http.Client
	out    io.Writer
	json   bool
	follow bool
}

func opsCmd(group string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet(group, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	admin := fs.String("admin", envOr("OBB_ADMIN_ADDR", "127.0.0.1:9100"), "")
	token := fs.String("token", os.Getenv("OBB_ADMIN_TOKEN"), "")
	dataDir := fs.String("data-dir", envOr("OBB_DATA_DIR", "/var/lib/obb"), "")
	output := fs.String("o", "table", "")
	limit := fs.Int("n", 50, "")
	follow := fs.Bool("f", false, "")
	reason := fs.String("reason", "", "")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%v\n%w", err, opsUsage())
	}
	rest := fs.Args()
	// Flags may also follow the subcommand (obb builds logs -f 42).
	if len(rest) > 1 {
		if err := fs.Parse(rest[1:]); err != nil {
			return fmt.Errorf("%v\n%w", err, opsUsage())
		}
		rest = append(rest[:1], fs.Args()...)
	}
	if len(rest) == 0 || (*output != "table" && *output != "json") {
		return opsUsage()
	}
	tok := *token
	if tok == "" {
		b, err := os.ReadFile(filepath.Join(*dataDir, "admin-token"))
		if err != nil {
			return fmt.Errorf("no operator token: set OBB_ADMIN_TOKEN or --token, or run where %s is readable (%v)", filepath.Join(*dataDir, "admin-token"), err)
		}
		tok = strings.TrimSpace(string(b))
	}
	base := *admin
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	c := &opsClient{base: strings.TrimSuffix(base, "/"), token: tok, http: &http.Client{}, out: stdout, json: *output == "json", follow: *follow}
	ctx := context.Background()
	arg := func() (string, error) {
		if len(rest) != 2 {
			return "", opsUsage()
		}
		return rest[1], nil
	}
	switch group + " " + rest[0] {
	case "builds ls":
		return c.listBuilds(ctx, *limit)
	case "builds show":
		id, err := arg()
		if err != nil {
			return err
		}
		return c.showBuild(ctx, id)
	case "builds logs":
		id, err := arg()
		if err != nil {
			return err
		}
		return c.logs(ctx, id)
	case "builds cancel":
		id, err := arg()
		if err != nil {
			return err
		}
		return c.cancel(ctx, id, *reason)
	case "hosts ls":
		return c.listHosts(ctx)
	case "hosts drain", "hosts resume":
		name, err := arg()
		if err != nil {
			return err
		}
		return c.setHost(ctx, name, rest[0])
	}
	return opsUsage()
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// call does one request and decodes the answer into out (a proto message).
func (c *opsClient) call(ctx context.Context, method, path string, body any, out proto.Message) error {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if c.json {
		var buf bytes.Buffer
		if json.Indent(&buf, raw, "", "  ") == nil {
			raw = buf.Bytes()
		}
		_, err := fmt.Fprintln(c.out, string(raw))
		return err
	}
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(raw, out)
}

func (c *opsClient) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the operator surface at %s: %w (is the builder running? OBB_ADMIN_ADDR)", c.base, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e struct {
			Message string `json:"message"`
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(raw, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(raw))
		}
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Message)
	}
	return resp, nil
}

func (c *opsClient) table(fn func(w *tabwriter.Writer)) error {
	w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fn(w)
	return w.Flush()
}

func short(s string) string {
	s = strings.TrimPrefix(s, "BUILD_STATE_")
	s = strings.TrimPrefix(s, "JOB_STATE_")
	return strings.ToLower(s)
}

func duration(b *ingestv1.Build) string {
	if b.GetCreatedAt() == nil {
		return "-"
	}
	end := time.Now()
	if b.GetFinishedAt() != nil {
		end = b.GetFinishedAt().AsTime()
	}
	return end.Sub(b.GetCreatedAt().AsTime()).Round(time.Second).String()
}

func (c *opsClient) listBuilds(ctx context.Context, limit int) error {
	var resp ingestv1.ListBuildsResponse
	if err := c.call(ctx, http.MethodGet, "/v1/builds?limit="+strconv.Itoa(limit), nil, &resp); err != nil || c.json {
		return err
	}
	return c.table(func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tFLEET\tUSER\tSTATE\tSERVICES\tCREATED\tDURATION")
		for _, b := range resp.GetBuilds() {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.GetBuildId(), b.GetFleet(), b.GetUser(), short(b.GetState().String()),
				strings.Join(b.GetServices(), ","), b.GetCreatedAt().AsTime().Local().Format("2006-01-02 15:04:05"), duration(b))
		}
	})
}

func (c *opsClient) showBuild(ctx context.Context, id string) error {
	var resp ingestv1.GetBuildResponse
	if err := c.call(ctx, http.MethodGet, "/v1/builds/"+url.PathEscape(id), nil, &resp); err != nil || c.json {
		return err
	}
	b := resp.GetBuild()
	return c.table(func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "id:\t%s\nrelease:\t%d\ncommit:\t%s\nfleet:\t%s\nuser:\t%s\nstate:\t%s\nservices:\t%s\ncreated:\t%s\nduration:\t%s\n",
			b.GetBuildId(), b.GetReleaseId(), b.GetCommit(), b.GetFleet(), b.GetUser(), short(b.GetState().String()),
			strings.Join(b.GetServices(), ", "), b.GetCreatedAt().AsTime().Local().Format(time.RFC3339), duration(b))
		for _, j := range b.GetJobs() {
			host := j.GetHost()
			if host == "" {
				host = "-"
			}
			fmt.Fprintf(w, "job %s:\t%s on %s\n", j.GetService(), short(j.GetState().String()), host)
		}
		if b.GetError() != "" {
			fmt.Fprintf(w, "error:\t%s\n", b.GetError())
		}
	})
}

func (c *opsClient) cancel(ctx context.Context, id, reason string) error {
	var resp ingestv1.CancelBuildResponse
	err := c.call(ctx, http.MethodPost, "/v1/builds/"+url.PathEscape(id)+":cancel", map[string]string{"reason": reason}, &resp)
	if err != nil || c.json {
		return err
	}
	_, err = fmt.Fprintf(c.out, "build %s: cancel requested (state %s)\n", id, short(resp.GetBuild().GetState().String()))
	return err
}

// logs prints a build's log; with follow until the build ends, else what
// it has so far (the replay, which arrives at once).
func (c *opsClient) logs(ctx context.Context, id string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, err := c.do(ctx, http.MethodGet, "/v1/builds/"+url.PathEscape(id)+"/logs", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	lines := make(chan []byte)
	errc := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			select {
			case lines <- append([]byte(nil), sc.Bytes()...):
			case <-ctx.Done():
				return
			}
		}
		errc <- sc.Err()
	}()
	for {
		var raw []byte
		if c.follow {
			select {
			case raw = <-lines:
			case err := <-errc:
				return err
			}
		} else {
			select {
			case raw = <-lines:
			case err := <-errc:
				return err
			case <-time.After(500 * time.Millisecond):
				return nil // the replay is over; -f follows
			}
		}
		var msg struct {
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(raw, &msg); err != nil {
			continue
		}
		if msg.Error != nil {
			return errors.New(msg.Error.Message)
		}
		if c.json {
			fmt.Fprintln(c.out, string(msg.Result))
			continue
		}
		var ev ingestv1.WatchBuildResponse
		if protojson.Unmarshal(msg.Result, &ev) != nil {
			continue
		}
		if line := renderEvent(ev.GetEvent()); line != "" {
			fmt.Fprintln(c.out, line)
		}
		if ev.GetEvent().GetFinished() != nil {
			return nil
		}
	}
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// renderEvent is an event's lines as balena-cli shows them, without
// colours; the build's end as "[Build] <state>".
func renderEvent(e *buildv1.Event) string {
	if f := e.GetFinished(); f != nil {
		s := short(f.GetState().String())
		if f.GetError() != "" {
			s += ": " + f.GetError()
		}
		return fmt.Sprintf("%-11s%s", "[Build]", s)
	}
	lines := gateway.Lines(e)
	for i, l := range lines {
		lines[i] = ansi.ReplaceAllString(l, "")
	}
	return strings.Join(lines, "\n")
}

func (c *opsClient) listHosts(ctx context.Context) error {
	var resp schedulerv1.ListHostsResponse
	if err := c.call(ctx, http.MethodGet, "/v1/hosts", nil, &resp); err != nil || c.json {
		return err
	}
	return c.table(func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "NAME\tARCHS\tEMULATED\tSLOTS\tHEALTHY\tDRAINING\tPLUGIN\tSECRETS\tLAST SEEN")
		for _, h := range resp.GetHosts() {
			emul := strings.Join(h.GetEmulatedArchs(), ",")
			if emul == "" {
				emul = "-"
			}
			health := "yes"
			if !h.GetHealthy() {
				health = "no: " + firstLine(h.GetHealthMessage())
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%d/%d\t%s\t%v\t%s\t%v\t%s\n", h.GetName(), strings.Join(h.GetNativeArchs(), ","), emul,
				h.GetRunning(), h.GetMaxConcurrent(), health, h.GetDraining(), h.GetPlugin(), h.GetSecrets(), h.GetLastSeen().AsTime().Local().Format("15:04:05"))
		}
	})
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func (c *opsClient) setHost(ctx context.Context, name, verb string) error {
	var resp schedulerv1.DrainHostResponse
	if err := c.call(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(name)+":"+verb, map[string]string{}, &resp); err != nil || c.json {
		return err
	}
	h := resp.GetHost()
	state := "in the pool"
	if h.GetDraining() {
		state = "draining: no new jobs; running ones finish"
	}
	_, err := fmt.Fprintf(c.out, "host %s: %s (%d running)\n", h.GetName(), state, h.GetRunning())
	return err
}
