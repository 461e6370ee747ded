package harness

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// PushOptions are balena push's flags as they reach /v3/build.
type PushOptions struct {
	Slug       string
	Token      string
	Dockerfile string
	Emulated   bool
	Nocache    bool
	Headless   bool
	Draft      bool
	// OnMessage sees each streamed element as it arrives.
	OnMessage func(Message)
}

// Message is one element of the /v3/build response array.
type Message struct {
	Message  string `json:"message"`
	Replace  bool   `json:"replace"`
	IsError  bool   `json:"isError"`
	Type     string `json:"type"`
	Resource string `json:"resource"`
	Value    any    `json:"value"`
}

// PushResult is what came back.
type PushResult struct {
	Status    int
	Body      string // for non-200 answers and headless replies
	ReleaseID int64
	Messages  []Message
	IsError   bool
	// FirstIsBuildLogID: the first element was the buildLogId metadata.
	FirstIsBuildLogID bool
}

// Text is every message joined by newlines, ANSI codes removed and runs of
// spaces collapsed (as balena-cli's own tests compare output).
func (r *PushResult) Text() string {
	var sb strings.Builder
	for _, m := range r.Messages {
		if m.Type == "" {
			sb.WriteString(strings.Join(strings.Fields(StripANSI(m.Message)), " ") + "\n")
		}
	}
	return sb.String()
}

// StripANSI removes colour codes.
func StripANSI(s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		sb.WriteByte(s[i])
	}
	return sb.String()
}

// Push uploads dir the way balena-cli does (gzip tar, regular files only,
// no directory entries, chunked) and reads the streamed answer.
func Push(ctx context.Context, builderURL, dir string, o PushOptions) (*PushResult, error) {
	return PushBody(ctx, builderURL, TarGz(dir), o)
}

// PushHeadless pushes dir headless (balena push --detached: the builder
// answers at once and builds in the background) and returns the release
// id it answered with.
func PushHeadless(ctx context.Context, builderURL, dir string, o PushOptions) (int64, error) {
	o.Headless = true
	res, err := Push(ctx, builderURL, dir, o)
	if err != nil {
		return 0, err
	}
	var reply struct {
		Started   bool  `json:"started"`
		ReleaseID int64 `json:"releaseId"`
	}
	if err := json.Unmarshal([]byte(res.Body), &reply); err != nil || !reply.Started || reply.ReleaseID == 0 {
		return 0, fmt.Errorf("headless push: %d %q (%v)", res.Status, res.Body, err)
	}
	return reply.ReleaseID, nil
}

// PushBody is Push with a ready body (for malformed uploads).
func PushBody(ctx context.Context, builderURL string, body io.Reader, o PushOptions) (*PushResult, error) {
	q := url.Values{}
	q.Set("slug", o.Slug)
	q.Set("dockerfilePath", o.Dockerfile)
	q.Set("emulated", strconv.FormatBool(o.Emulated))
	q.Set("nocache", strconv.FormatBool(o.Nocache))
	q.Set("headless", strconv.FormatBool(o.Headless))
	q.Set("isdraft", strconv.FormatBool(o.Draft))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, builderURL+"/v3/build?"+q.Encode(), body)
	if err != nil {
		return nil, err
	}
	if o.Token != "" {
		req.Header.Set("Authorization", "Bearer "+o.Token)
	}
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	res := &PushResult{Status: resp.StatusCode}
	if resp.StatusCode != http.StatusOK || o.Headless {
		b, err := io.ReadAll(resp.Body)
		res.Body = string(b)
		return res, err
	}
	dec := json.NewDecoder(resp.Body)
	tok, err := dec.Token()
	if err != nil {
		return res, fmt.Errorf("read the array start: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return res, fmt.Errorf("the answer is not a JSON array: starts with %v", tok)
	}
	for dec.More() {
		var m Message
		if err := dec.Decode(&m); err != nil {
			return res, fmt.Errorf("read an element: %w", err)
		}
		if len(res.Messages) == 0 && m.Type == "metadata" && m.Resource == "buildLogId" {
			res.FirstIsBuildLogID = true
		}
		if m.Resource == "buildLogId" {
			if f, ok := m.Value.(float64); ok {
				res.ReleaseID = int64(f)
			}
		}
		if m.IsError {
			res.IsError = true
		}
		res.Messages = append(res.Messages, m)
		if o.OnMessage != nil {
			o.OnMessage(m)
		}
	}
	if _, err := dec.Token(); err != nil {
		return res, fmt.Errorf("read the array end: %w", err)
	}
	return res, nil
}

// TarGz streams a gzip tar of dir, as balena-cli builds it.
func TarGz(dir string) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		gz, _ := gzip.NewWriterLevel(pw, 6)
		tw := tar.NewWriter(gz)
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			info, err := os.Stat(p) // symlinks dereferenced, as the CLI does
			if err != nil || !info.Mode().IsRegular() {
				return err
			}
			mode := int64(0o644)
			if info.Mode()&0o111 != 0 {
				mode = 0o755
			}
			if err := tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel), Mode: mode, Size: info.Size(), ModTime: info.ModTime(), Typeflag: tar.TypeReg}); err != nil {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		})
		if err == nil {
			err = tw.Close()
		}
		if err == nil {
			err = gz.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}
