package rpc

import (
	"fmt"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
)

// Dial returns a client connection to another builder service,
// authenticated as auth says (mTLS or the process secret).
func Dial(target string, auth *Internal) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(target, append(auth.DialOptions(),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes)),
	)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return conn, nil
}
