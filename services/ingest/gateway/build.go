// Package gateway is the builder's HTTP face: balena-cli's POST /v3/build,
// served on the grpc-gateway mux and carried to ingest's Build RPC, plus
// the REST routes grpc-gateway generates.
package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
)

const uploadChunk = 256 << 10

// BuildHandler serves balena-cli's POST /v3/build through ingest's Build
// RPC: the token and fleet are checked before the body is read; errors
// before the build starts are HTTP statuses; after that, one JSON array
// streams the build (buildLogId first), or, with headless=true, one object.
//
// The upload is paced (limits): too long or too slow, it is cut off with
// 408. A body that says Content-Encoding: gzip must be gzip (400 if not).
func BuildHandler(ingest ingestv1.IngestServiceClient, limits UploadLimits, logger *slog.Logger) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		// Answer without reading the body first (net/http would otherwise
		// drain up to 256 KiB of an unread upload before a 401 goes out).
		rc := http.NewResponseController(w)
		_ = rc.EnableFullDuplex()
		q := r.URL.Query()
		spec := &ingestv1.BuildSpec{Slug: q.Get("slug"), DockerfilePath: q.Get("dockerfilePath"),
			Emulated: flag(q.Get("emulated")), Nocache: flag(q.Get("nocache")), Headless: flag(q.Get("headless")), IsDraft: flag(q.Get("isdraft"))}
		if spec.Slug == "" {
			httpError(w, http.StatusBadRequest, "missing slug: the fleet to build for (slug=org/fleet)")
			return
		}
		auth := r.Header.Get("Authorization")
		if auth == "" {
			httpError(w, http.StatusUnauthorized, "no token: log in with `balena login`")
			return
		}
		gzipped, ok := contentEncoding(r.Header.Values("Content-Encoding"))
		if !ok {
			httpError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Encoding %q is not supported: send the tar plain or gzip-compressed", r.Header.Get("Content-Encoding")))
			return
		}
		ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(r.Context(), "authorization", auth))
		defer cancel()
		stream, err := ingest.Build(ctx)
		if err != nil {
			rpcError(w, err)
			return
		}
		if err := stream.Send(&ingestv1.BuildRequest{Msg: &ingestv1.BuildRequest_Spec{Spec: spec}}); err != nil {
			rpcError(w, recvErr(stream))
			return
		}
		// Authorized (or not) before a byte of the body is read.
		if first, err := stream.Recv(); err != nil {
			rpcError(w, err)
			return
		} else if first.GetAccepted() == nil {
			httpError(w, http.StatusBadGateway, "unexpected answer from ingest")
			return
		}
		body := pace(r.Body, rc, limits)
		defer body.close()
		br := bufio.NewReaderSize(body, 64<<10)
		if gzipped {
			if magic, err := br.Peek(2); err == nil && (magic[0] != 0x1f || magic[1] != 0x8b) {
				httpError(w, http.StatusBadRequest, "the body says Content-Encoding: gzip but is not gzip: send a gzip-compressed tar, or no Content-Encoding for a plain one")
				return // cancel() ends the stream: ingest creates nothing
			}
		}
		err = upload(stream, br)
		body.close()
		var slow *errPace
		if errors.As(err, &slow) {
			logger.Info("upload cut off", "slug", spec.Slug, "reason", slow.Error())
			httpError(w, http.StatusRequestTimeout, slow.Error())
			return
		}
		if err != nil {
			rpcError(w, err)
			return
		}
		resp, err := stream.Recv()
		if err != nil {
			rpcError(w, err)
			return
		}
		started := resp.GetStarted()
		if started == nil {
			httpError(w, http.StatusBadGateway, "unexpected answer from ingest")
			return
		}
		if spec.Headless {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"started": true, "releaseId": started.GetReleaseId()})
			return
		}
		streamBuild(w, stream, started.GetReleaseId(), logger)
	}
}

// upload sends the request body to ingest in chunks.
func upload(stream ingestv1.IngestService_BuildClient, body io.Reader) error {
	buf := make([]byte, uploadChunk)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if sendErr := stream.Send(&ingestv1.BuildRequest{Msg: &ingestv1.BuildRequest_Chunk{Chunk: append([]byte(nil), buf[:n]...)}}); sendErr != nil {
				return recvErr(stream)
			}
		}
		if err == io.EOF {
			return stream.CloseSend()
		}
		var slow *errPace
		if errors.As(err, &slow) {
			return slow
		}
		if err != nil {
			return status.Errorf(codes.Canceled, "upload interrupted: %v", err)
		}
	}
}

// recvErr returns the server's reason after a failed Send.
func recvErr(stream ingestv1.IngestService_BuildClient) error {
	_, err := stream.Recv()
	if err == nil || errors.Is(err, io.EOF) {
		return status.Error(codes.Unavailable, "ingest closed the stream")
	}
	return err
}

// streamBuild writes the JSON array of the build's messages as they come.
func streamBuild(w http.ResponseWriter, stream ingestv1.IngestService_BuildClient, releaseID int64, logger *slog.Logger) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	out := newArrayWriter(w)
	out.write(buildLogID(releaseID))
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if status.Code(err) != codes.Canceled {
				logger.Warn("build stream broke", "release", releaseID, "error", err)
				out.write(errorMessage("The build stream broke: %s", status.Convert(err).Message()))
			}
			break
		}
		for _, m := range render(resp.GetEvent()) {
			if !out.write(m) {
				return // the client is gone; the RPC's cancel stops the build
			}
		}
	}
	out.close()
}

// arrayWriter writes one JSON array element by element, flushing each.
// After progress lines (replace) it erases the line before the next
// ordinary one, as balenaCloud's builder does.
type arrayWriter struct {
	w           http.ResponseWriter
	rc          *http.ResponseController
	first       bool
	lastReplace bool
	err         error
}

func newArrayWriter(w http.ResponseWriter) *arrayWriter {
	return &arrayWriter{w: w, rc: http.NewResponseController(w), first: true}
}

func (a *arrayWriter) write(m message) bool {
	if a.err != nil {
		return false
	}
	if m.Type == "" {
		if a.lastReplace && !m.Replace && !a.write(cursorErase) {
			return false
		}
		a.lastReplace = m.Replace
	}
	b, err := json.Marshal(m)
	if err != nil {
		a.err = err
		return false
	}
	sep := ",\n"
	if a.first {
		sep, a.first = "[\n", false
	}
	if _, a.err = io.WriteString(a.w, sep+string(b)); a.err == nil {
		a.err = a.rc.Flush()
	}
	return a.err == nil
}

func (a *arrayWriter) close() {
	if a.err == nil {
		_, _ = io.WriteString(a.w, "\n]\n")
		_ = a.rc.Flush()
	}
}

// contentEncoding tells whether the body is gzip ("gzip" or "x-gzip") or
// plain (no Content-Encoding, or "identity"); ok is false for anything else.
func contentEncoding(values []string) (gzipped, ok bool) {
	for _, v := range values {
		for _, e := range strings.Split(v, ",") {
			switch strings.ToLower(strings.TrimSpace(e)) {
			case "", "identity":
			case "gzip", "x-gzip":
				gzipped = true
			default:
				return false, false
			}
		}
	}
	return gzipped, true
}

func flag(v string) bool {
	b, _ := strconv.ParseBool(v)
	return b
}

// httpError answers an early error: status line and a JSON string body
// (balena-cli prints only the status line).
func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Connection", "close") // the rest of the upload is not wanted
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(msg)
}

// rpcError maps ingest's gRPC error to an HTTP status.
func rpcError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	httpError(w, runtime.HTTPStatusFromCode(st.Code()), st.Message())
}
