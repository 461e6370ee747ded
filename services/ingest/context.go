package ingest

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
	"github.com/open-balena-builder/builder/services/ingest/metadata"
	"github.com/open-balena-builder/builder/services/ingest/project"
)

const contextChunk = 256 << 10

// OpenContext streams one service's build context as an uncompressed tar:
// its files without .balena/ and .resin/, with the resolved (templated)
// Dockerfile in place.
func (s *Server) OpenContext(req *ingestv1.OpenContextRequest, stream grpc.ServerStreamingServer[ingestv1.OpenContextResponse]) error {
	b, svc, err := s.jobService(stream.Context(), req.GetBuildId(), req.GetService(), req.GetJobId(), req.GetTicket())
	if err != nil {
		return err
	}
	w := &chunkWriter{send: func(p []byte) error {
		return stream.Send(&ingestv1.OpenContextResponse{Chunk: p})
	}}
	bw := bufio.NewWriterSize(w, contextChunk)
	root := filepath.Join(b.dir, "src", filepath.FromSlash(svc.Context))
	if err := writeContext(bw, root, svc); err != nil {
		if stream.Context().Err() != nil {
			return status.FromContextError(stream.Context().Err()).Err()
		}
		return status.Errorf(codes.Internal, "build context of %s: %v", svc.Name, err)
	}
	return bw.Flush()
}

// GetBuildSecrets returns a service's build secrets and the project's
// registry credentials, to the executor running that service's job only.
func (s *Server) GetBuildSecrets(ctx context.Context, req *ingestv1.GetBuildSecretsRequest) (*ingestv1.GetBuildSecretsResponse, error) {
	b, svc, err := s.jobService(ctx, req.GetBuildId(), req.GetService(), req.GetJobId(), req.GetTicket())
	if err != nil {
		return nil, err
	}
	b.mu.Lock() // forgetSecrets clears them when the build ends
	defer b.mu.Unlock()
	resp := &ingestv1.GetBuildSecretsResponse{RegistryConfig: b.plan.RegistryConfig}
	for _, sec := range svc.Secrets {
		resp.Secrets = append(resp.Secrets, &ingestv1.BuildSecret{Dest: sec.Dest, Content: sec.Content})
	}
	return resp, nil
}

// jobService finds a build's service for the executor running its job: the
// scheduler confirms that jobID runs, that ticket is the one it gave that
// job's executor, and that the job is this build's service.
func (s *Server) jobService(ctx context.Context, buildID, service, jobID, ticket string) (*build, *project.Service, error) {
	job, err := s.scheduler.AuthorizeJob(ctx, &schedulerv1.AuthorizeJobRequest{JobId: jobID, Ticket: ticket})
	if err != nil {
		return nil, nil, passOn(err)
	}
	if job.GetJob().GetBuildId() != buildID || job.GetJob().GetService() != service {
		return nil, nil, status.Errorf(codes.PermissionDenied, "job %q is not service %q of build %q", jobID, service, buildID)
	}
	b, err := s.lookup(buildID)
	if err != nil {
		return nil, nil, err
	}
	svc := b.plan.Service(service)
	if svc == nil {
		return nil, nil, status.Errorf(codes.NotFound, "build %s has no service %q", b.id, service)
	}
	return b, svc, nil
}

// dockerignore reads the context's .dockerignore (nil when it has none).
func dockerignore(root string) (*patternmatcher.PatternMatcher, error) {
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf(".dockerignore: %w", err)
	}
	return patternmatcher.New(patterns)
}

// writeContext writes the tar of root for svc: the Dockerfile first (the
// executor plugin reads its FROM lines before the build starts), then the
// rest with its .dockerignore applied (the Dockerfile and .dockerignore
// always go, as with docker build), the build metadata (.balena/, .resin/)
// left out.
func writeContext(w io.Writer, root string, svc *project.Service) error {
	ignore, err := dockerignore(root)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	wroteDockerfile, err := writeDockerfile(tw, root, svc)
	if err != nil {
		return err
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		name := filepath.ToSlash(rel)
		if metadata.StripMetadata(name) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if wroteDockerfile && name == path.Clean(svc.Dockerfile) {
			return nil // written first
		}
		if ignore != nil && name != svc.Dockerfile && name != ".dockerignore" {
			skip, err := ignore.MatchesOrParentMatches(name)
			if err != nil {
				return err
			}
			if skip {
				if d.IsDir() && !ignore.Exclusions() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = name, 0, 0, "", ""
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// writeDockerfile writes svc's Dockerfile as the first entry: the rendered
// template, or the file as it is when it is a regular file. It tells
// whether it wrote one (a missing or odd one is left to the walk and the
// daemon).
func writeDockerfile(tw *tar.Writer, root string, svc *project.Service) (bool, error) {
	name := path.Clean(svc.Dockerfile)
	if svc.Templated {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(svc.Content)), Typeflag: tar.TypeReg}); err != nil {
			return false, err
		}
		_, err := tw.Write(svc.Content)
		return err == nil, err
	}
	f, err := os.Open(filepath.Join(root, filepath.FromSlash(name)))
	if err != nil {
		return false, nil
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() {
		return false, nil
	}
	hdr, err := tar.FileInfoHeader(info, "")
	if err != nil {
		return false, err
	}
	hdr.Name, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = name, 0, 0, "", ""
	if err := tw.WriteHeader(hdr); err != nil {
		return false, err
	}
	_, err = io.Copy(tw, f)
	return err == nil, err
}

// chunkWriter sends each write as one message (bufio sizes the writes).
type chunkWriter struct{ send func([]byte) error }

func (c *chunkWriter) Write(p []byte) (int, error) {
	if err := c.send(append([]byte(nil), p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// removeAll removes a build's upload; it refuses paths that do not look
// like one (a guard against a bug turning into rm -rf of the data dir).
func removeAll(dir string) error {
	if dir == "" || !strings.Contains(filepath.Base(dir), "upload-") {
		return nil
	}
	return os.RemoveAll(dir)
}
