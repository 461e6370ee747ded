package rpc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/open-balena-builder/builder/platform/certs"
)

// serveInternal starts an internal server with auth on loopback.
func serveInternal(t *testing.T, auth *Internal) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, health := NewServer(slog.New(slog.DiscardHandler), auth.Authenticate, auth.ServerOptions()...)
	health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// call lists services through reflection (an authenticated call) and
// checks health (open to all); it returns their codes.
func call(t *testing.T, addr string, opts ...grpc.DialOption) (reflect, health codes.Code) {
	t.Helper()
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, herr := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err == nil {
		// A refused stream may fail Send with io.EOF: its status comes
		// with Recv.
		_ = stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		_, err = stream.Recv()
	}
	return status.Code(err), status.Code(herr)
}

func TestInternalSecret(t *testing.T) {
	auth, err := NewSecretInternal()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewSecretInternal()
	addr := serveInternal(t, auth)
	plain := grpc.WithTransportCredentials(insecure.NewCredentials())
	tests := []struct {
		name          string
		opts          []grpc.DialOption
		reflect, heal codes.Code
	}{
		{"this process", auth.DialOptions(), codes.OK, codes.OK},
		{"no secret", []grpc.DialOption{plain}, codes.Unauthenticated, codes.OK},
		{"another process's secret", other.DialOptions(), codes.Unauthenticated, codes.OK},
		{"an empty secret", []grpc.DialOption{plain, grpc.WithPerRPCCredentials(secretCreds(""))}, codes.Unauthenticated, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, h := call(t, addr, tt.opts...)
			if r != tt.reflect || h != tt.heal {
				t.Errorf("reflection %v health %v, want %v %v", r, h, tt.reflect, tt.heal)
			}
		})
	}
}

func TestInternalMTLS(t *testing.T) {
	dir := t.TempDir()
	f, err := certs.Generate(dir+"/a", []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	g, err := certs.Generate(dir+"/b", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := NewTLSInternal(f.CA, f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := NewTLSInternal(g.CA, g.Cert, g.Key)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveInternal(t, auth)
	caPEM, _ := os.ReadFile(f.CA)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	// Trusts the server, shows no certificate of its own.
	noCert := grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool}))
	// Shows a certificate another CA signed (and trusts our server).
	otherCert, _ := tls.LoadX509KeyPair(g.Cert, g.Key)
	foreign := grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{otherCert}}))
	tests := []struct {
		name          string
		opts          []grpc.DialOption
		reflect, heal codes.Code
	}{
		{"the builder's certificate", auth.DialOptions(), codes.OK, codes.OK},
		{"no client certificate", []grpc.DialOption{noCert}, codes.Unauthenticated, codes.OK},
		{"a certificate of another CA", []grpc.DialOption{foreign}, codes.Unavailable, codes.Unavailable},
		{"a server of another CA is not trusted", stranger.DialOptions(), codes.Unavailable, codes.Unavailable},
		{"plaintext", []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, codes.Unavailable, codes.Unavailable},
		{"plaintext with a secret", []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(secretCreds("x"))}, codes.Unavailable, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, h := call(t, addr, tt.opts...)
			if r != tt.reflect || h != tt.heal {
				t.Errorf("reflection %v health %v, want %v %v", r, h, tt.reflect, tt.heal)
			}
		})
	}
}

func TestTokenAuthenticator(t *testing.T) {
	authn := TokenAuthenticator("op-token", "operator")
	tests := []struct {
		name   string
		md     metadata.MD
		method string
		want   codes.Code
	}{
		{"operator token", metadata.Pairs("authorization", "Bearer op-token"), "/x.Y/Z", codes.OK},
		{"scheme in lower case", metadata.Pairs("authorization", "bearer op-token"), "/x.Y/Z", codes.OK},
		{"none", nil, "/x.Y/Z", codes.Unauthenticated},
		{"another token", metadata.Pairs("authorization", "Bearer user-token"), "/x.Y/Z", codes.Unauthenticated},
		{"a prefix of it", metadata.Pairs("authorization", "Bearer op-tok"), "/x.Y/Z", codes.Unauthenticated},
		{"basic auth", metadata.Pairs("authorization", "Basic op-token"), "/x.Y/Z", codes.Unauthenticated},
		{"health needs none", nil, "/grpc.health.v1.Health/Check", codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := metadata.NewIncomingContext(context.Background(), tt.md)
			if got := status.Code(authn(ctx, tt.method)); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	if TokenEqual("", "") {
		t.Error("an empty expected token matches")
	}
}
